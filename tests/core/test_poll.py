# SPDX-License-Identifier: BSD-3-Clause
"""The poll state machine, driven by scripted connections (states a server cannot produce)."""

from __future__ import annotations

import psycopg2
import pytest

from psycogreen.core import make_wait_callback, timeout
from psycogreen.core._compat import POLL_OK, POLL_READ, POLL_WRITE
from tests.support.fakes import FakeFactory


class Recorder:
    """Waits that record what they were asked; optionally time out or raise."""

    def __init__(self, *, ready: bool = True, exc: BaseException | None = None) -> None:
        self.calls: list[tuple[str, int, float | None]] = []
        self.ready = ready
        self.exc = exc

    def read(self, fd: int, timeout: float | None = None, /) -> bool:
        return self._wait("read", fd, timeout)

    def write(self, fd: int, timeout: float | None = None, /) -> bool:
        return self._wait("write", fd, timeout)

    def _wait(self, kind: str, fd: int, timeout: float | None) -> bool:
        self.calls.append((kind, fd, timeout))
        if self.exc is not None:
            raise self.exc
        return self.ready


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_loop_waits_for_each_state_until_ok(rec: Recorder, fakes: FakeFactory) -> None:
    conn = fakes(POLL_WRITE, POLL_READ, POLL_READ, POLL_OK)
    make_wait_callback(rec.read, rec.write)(conn)
    fd = conn.fileno()
    assert rec.calls == [("write", fd, None), ("read", fd, None), ("read", fd, None)]
    assert conn.polls == 4


def test_immediately_ok_does_not_wait(rec: Recorder, fakes: FakeFactory) -> None:
    conn = fakes(POLL_OK)
    make_wait_callback(rec.read, rec.write)(conn)
    assert rec.calls == []


@pytest.mark.parametrize("bad", [3, 42, -1])
def test_unknown_poll_state_is_an_operational_error(
    rec: Recorder, fakes: FakeFactory, bad: int
) -> None:
    conn = fakes(POLL_READ, bad)
    with pytest.raises(psycopg2.OperationalError, match=f"bad result from poll: {bad}"):
        make_wait_callback(rec.read, rec.write)(conn)


def test_unknown_poll_state_with_a_deadline(rec: Recorder, fakes: FakeFactory) -> None:
    conn = fakes(7)
    with pytest.raises(psycopg2.OperationalError, match="bad result from poll: 7"):
        make_wait_callback(rec.read, rec.write)(conn, 5)


def test_errors_from_poll_propagate_unchanged(rec: Recorder, fakes: FakeFactory) -> None:
    error = psycopg2.OperationalError("server closed the connection unexpectedly")
    conn = fakes(POLL_READ, error)
    with pytest.raises(psycopg2.OperationalError) as info:
        make_wait_callback(rec.read, rec.write)(conn)
    assert info.value is error


@pytest.mark.parametrize("thing", [None, 42, "dbname=x", object()])
def test_not_a_connection_is_a_type_error(rec: Recorder, thing: object) -> None:
    with pytest.raises(TypeError, match=f"not {type(thing).__module__}.{type(thing).__qualname__}"):
        make_wait_callback(rec.read, rec.write)(thing)  # type: ignore[arg-type]


def test_exception_from_a_wait_propagates_unchanged(fakes: FakeFactory) -> None:
    """An interrupt thrown into the wait leaves as itself (psycopg2 then closes the connection)."""

    class Interrupt(BaseException):
        pass

    exc = Interrupt()
    rec = Recorder(exc=exc)
    conn = fakes(POLL_READ)
    with pytest.raises(Interrupt) as info:
        make_wait_callback(rec.read, rec.write)(conn)
    assert info.value is exc


def test_fileno_is_read_again_each_wait(rec: Recorder, fakes: FakeFactory) -> None:
    """libpq switches sockets while trying hosts: the fd must not be cached."""
    first = fakes(POLL_WRITE, POLL_READ, POLL_OK)
    other = fakes()
    fds = iter([first.fileno(), other.fileno()])
    first.fileno = lambda: next(fds)  # type: ignore[method-assign]
    make_wait_callback(rec.read, rec.write)(first)
    assert [c[1] for c in rec.calls] == [first._a.fileno(), other.fileno()]


def test_deadline_passes_the_remaining_time(rec: Recorder, fakes: FakeFactory) -> None:
    conn = fakes(POLL_READ, POLL_WRITE, POLL_OK)
    make_wait_callback(rec.read, rec.write)(conn, 10)
    assert [c[0] for c in rec.calls] == ["read", "write"]
    assert all(c[2] is not None and 9 < c[2] <= 10 for c in rec.calls)


def test_context_timeout_applies_and_is_scoped(rec: Recorder, fakes: FakeFactory) -> None:
    callback = make_wait_callback(rec.read, rec.write)
    with timeout(3):
        callback(fakes(POLL_READ, POLL_OK))
        with timeout(None):
            callback(fakes(POLL_READ, POLL_OK))
    callback(fakes(POLL_READ, POLL_OK))
    timeouts = [c[2] for c in rec.calls]
    assert timeouts[0] is not None
    assert 2 < timeouts[0] <= 3
    assert timeouts[1:] == [None, None]


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"), timeout(bad):
        pass


def test_timed_out_connect_is_an_operational_error(fakes: FakeFactory) -> None:
    rec = Recorder(ready=False)
    conn = fakes(POLL_WRITE)
    conn.status = 0  # STATUS_SETUP: still connecting
    with pytest.raises(
        psycopg2.OperationalError, match=r"connection attempt timed out after 0\.5 s"
    ):
        make_wait_callback(rec.read, rec.write)(conn, 0.5)


def test_timed_out_query_that_cannot_be_cancelled_closes(
    fakes: FakeFactory,
) -> None:
    """A fake has no libpq connection to cancel: the error says the connection is closed."""
    rec = Recorder(ready=False)
    conn = fakes(POLL_READ)
    with pytest.raises(psycopg2.OperationalError, match="could not be asked to cancel"):
        make_wait_callback(rec.read, rec.write)(conn, 0.1)


def test_keep_connection_on_interrupt_needs_a_cancel(fakes: FakeFactory) -> None:
    rec = Recorder(exc=KeyboardInterrupt())
    conn = fakes(POLL_READ)
    callback = make_wait_callback(rec.read, rec.write, keep_connection_on=(KeyboardInterrupt,))
    with pytest.raises(psycopg2.OperationalError, match="could not be asked to cancel"):
        callback(conn)


def test_interrupt_while_connecting_is_not_cancelled(fakes: FakeFactory) -> None:
    rec = Recorder(exc=KeyboardInterrupt())
    conn = fakes(POLL_WRITE)
    conn.status = 0
    callback = make_wait_callback(rec.read, rec.write, keep_connection_on=(KeyboardInterrupt,))
    with pytest.raises(psycopg2.OperationalError, match="connection attempt interrupted"):
        callback(conn)


def test_callback_names_and_docs() -> None:
    rec = Recorder()
    callback = make_wait_callback(rec.read, rec.write, name="x_wait_callback", module="pkg.x")
    assert callback.__name__ == "x_wait_callback"
    assert callback.__module__ == "pkg.x"
    assert callback.__doc__
    assert "rollback()" in callback.__doc__


def test_poll_constants_match_psycopg2() -> None:
    import psycopg2.extensions as ext

    assert (POLL_OK, POLL_READ, POLL_WRITE) == (ext.POLL_OK, ext.POLL_READ, ext.POLL_WRITE)
