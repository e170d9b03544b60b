# SPDX-License-Identifier: BSD-3-Clause
"""Guarded connections, per-connection deadlines and the interrupt paths of the poll loop.

Scripted connections and hand-made greenlets stand in for states a server cannot produce on
demand (an operation in flight in another thread, a second interrupt during a cancel). The
real-server behaviour is in ``tests/green/test_interrupt.py``.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import greenlet
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest

from psycogreen.core import (
    ConnectionBusyError,
    GuardedConnection,
    GuardedCursor,
    GuardedNamedCursor,
    _cancel,
    _connect,
    _guard,
    _inflight,
    _timeout,
    get_timeout,
    guarded_connection_class,
    guarded_cursor_class,
    make_wait_callback,
    set_timeout,
    timeout,
)
from psycogreen.core._compat import POLL_OK, POLL_READ
from tests.support.fakes import FakeFactory

# --- which greenlet owns a connection --------------------------------------------------------


def test_the_callback_marks_the_connection_in_flight(fakes: FakeFactory) -> None:
    conn = fakes(POLL_READ, POLL_OK)
    seen: list[object] = []

    def wait(fd: int, timeout: float | None = None, /) -> bool:
        seen.append(_inflight.inflight.get(id(conn)))
        return True

    make_wait_callback(wait, wait)(conn)
    assert seen == [greenlet.getcurrent()]
    assert id(conn) not in _inflight.inflight


def test_the_mark_goes_when_the_wait_raises(fakes: FakeFactory) -> None:
    conn = fakes(POLL_READ)

    def wait(fd: int, timeout: float | None = None, /) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_wait_callback(wait, wait)(conn)
    assert id(conn) not in _inflight.inflight


def _in_flight(conn: object, owner: object) -> Iterator[None]:
    _inflight.inflight[id(conn)] = owner
    try:
        yield
    finally:
        del _inflight.inflight[id(conn)]


def test_another_greenlet_of_this_thread_is_refused() -> None:
    conn = object()
    owner = greenlet.greenlet(lambda: None)  # never run: a greenlet of this thread
    for _ in _in_flight(conn, owner):
        with pytest.raises(ConnectionBusyError, match=r"^commit\(\) cannot run now") as info:
            _guard.refuse(conn, "commit()")
    assert isinstance(info.value, psycopg2.ProgrammingError)
    assert repr(owner) in str(info.value)


def test_the_owner_itself_and_idle_connections_pass() -> None:
    conn = object()
    _guard.refuse(conn, "commit()")  # idle
    for _ in _in_flight(conn, greenlet.getcurrent()):
        _guard.refuse(conn, "commit()")
    for _ in _in_flight(conn, None):  # no greenlets in that process: threads only
        _guard.refuse(conn, "commit()")


def test_a_greenlet_of_another_thread_is_left_to_psycopg2s_mutex() -> None:
    conn = object()
    made: list[object] = []
    thread = threading.Thread(target=lambda: made.append(greenlet.greenlet(lambda: None)))
    thread.start()
    thread.join()
    for _ in _in_flight(conn, made[0]):
        _guard.refuse(conn, "commit()")  # psycopg2 would make this thread wait: correct


# --- guarded classes ------------------------------------------------------------------------


class MyConnection(psycopg2.extensions.connection):
    pass


def test_default_classes_are_the_guards() -> None:
    assert guarded_connection_class() is GuardedConnection
    assert guarded_connection_class(psycopg2.extensions.connection) is GuardedConnection
    assert guarded_cursor_class() is GuardedCursor
    assert guarded_cursor_class(named=True) is GuardedNamedCursor
    assert guarded_cursor_class(GuardedCursor, named=True) is GuardedNamedCursor


def test_a_user_factory_keeps_its_class_above_the_guard() -> None:
    cls = guarded_connection_class(MyConnection)
    assert cls.__mro__[1:] == (
        MyConnection,
        GuardedConnection,
        psycopg2.extensions.connection,
        object,
    )
    assert cls.__name__ == "MyConnection"
    assert guarded_connection_class(MyConnection) is cls  # made once
    assert guarded_connection_class(cls) is cls  # already guarded


def test_extras_classes_are_guarded_below_their_overrides() -> None:
    cls = guarded_connection_class(psycopg2.extras.DictConnection)
    mro = cls.__mro__
    assert mro.index(psycopg2.extras.DictConnection) < mro.index(GuardedConnection)
    cur = guarded_cursor_class(psycopg2.extras.RealDictCursor, named=True)
    assert issubclass(cur, psycopg2.extras.RealDictCursor)
    assert cur.__mro__.index(psycopg2.extras.RealDictCursor) < cur.__mro__.index(GuardedNamedCursor)


def test_a_factory_that_is_not_a_class_is_left_alone() -> None:
    def factory(dsn: str) -> Any:
        return psycopg2.extensions.connection(dsn)

    assert guarded_connection_class(factory) is factory
    assert guarded_cursor_class(factory) is factory


# --- psycopg2.connect while patched ---------------------------------------------------------


@pytest.fixture
def restore_connect() -> Iterator[None]:
    before = psycopg2.connect
    replaced = _connect._replaced
    yield
    psycopg2.connect = before
    _connect._replaced = replaced


@pytest.mark.usefixtures("restore_connect")
def test_install_and_uninstall_swap_psycopg2_connect() -> None:
    original = psycopg2.connect
    _connect.uninstall()
    psycopg2.connect = original
    _connect.install()
    assert psycopg2.connect is _connect.connect
    _connect.install()  # idempotent
    assert _connect._replaced is original
    _connect.uninstall()
    assert psycopg2.connect is original


@pytest.mark.usefixtures("restore_connect")
def test_uninstall_leaves_a_later_wrapper_in_place() -> None:
    _connect.install()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _connect.connect(*args, **kwargs)

    psycopg2.connect = wrapper
    _connect.uninstall()
    assert psycopg2.connect is wrapper


@pytest.mark.usefixtures("restore_connect")
def test_connect_guards_the_factory_and_takes_its_own_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    made = MyConnectionStub()

    def raw(dsn: str | None, **kwargs: Any) -> Any:
        seen.update(kwargs, dsn=dsn, timeout=_timeout.block_timeout())
        return made

    monkeypatch.setattr(_connect, "raw_connect", raw)
    conn = _connect.connect("dbname=x", connection_factory=MyConnection, psycogreen_timeout=3)
    assert conn is made
    assert seen["dsn"] == "dbname=x"
    assert "psycogreen_timeout" not in seen  # never given to libpq
    assert seen["connection_factory"] is guarded_connection_class(MyConnection)
    assert seen["timeout"] == 3.0  # the connect runs under the connection's deadline
    assert get_timeout(conn) == 3.0


class MyConnectionStub:
    """Stands for a connection object (weak-referenceable)."""


# --- per-connection deadlines ---------------------------------------------------------------


class Waits:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def __call__(self, _fd: int, timeout: float | None = None, /) -> bool:
        self.timeouts.append(timeout)
        return True


def test_the_connection_deadline_applies_and_a_block_overrides_it(
    fakes: FakeFactory,
) -> None:
    waits = Waits()
    callback = make_wait_callback(waits, waits)
    conn = fakes(POLL_READ, POLL_OK, POLL_READ, POLL_OK, POLL_READ, POLL_OK)
    set_timeout(conn, 5)
    assert get_timeout(conn) == 5.0
    callback(conn)
    with timeout(1):
        callback(conn)
    with timeout(None):  # lifts the connection's limit too
        callback(conn)
    assert waits.timeouts[0] is not None
    assert 4.9 < waits.timeouts[0] <= 5
    assert waits.timeouts[1] is not None
    assert 0.9 < waits.timeouts[1] <= 1
    assert waits.timeouts[2] is None
    set_timeout(conn, None)
    assert get_timeout(conn) is None


def test_a_connection_deadline_does_not_keep_the_connection_alive() -> None:
    conn = MyConnectionStub()
    set_timeout(conn, 1)
    ref = weakref.ref(conn)
    del conn
    gc.collect()
    assert ref() is None
    assert not _timeout.connection_timeouts


@pytest.mark.parametrize("bad", [0, -1])
def test_set_timeout_refuses_non_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        set_timeout(MyConnectionStub(), bad)


# --- interrupts -----------------------------------------------------------------------------


def test_a_second_interrupt_during_the_cancel_propagates(
    fakes: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = fakes(POLL_READ)
    first = TimeoutError("first")

    def wait(fd: int, timeout: float | None = None, /) -> bool:
        raise first

    class Request:  # a second interrupt arrives while the cancel request is being sent
        def send(self, *_args: object) -> bool:
            raise KeyboardInterrupt

        def close(self) -> None:
            pass

    monkeypatch.setattr(_cancel, "prepare", lambda _conn: Request())
    with pytest.raises(KeyboardInterrupt) as info:
        make_wait_callback(wait, wait)(conn)
    assert info.value.__context__ is first


def test_a_failing_cancel_does_not_hide_the_interrupt(
    fakes: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = fakes(POLL_READ)

    def wait(fd: int, timeout: float | None = None, /) -> bool:
        raise TimeoutError

    class Request:
        def send(self, *_args: object) -> bool:
            raise OSError

        def close(self) -> None:
            pass

    monkeypatch.setattr(_cancel, "prepare", lambda _conn: Request())
    with pytest.raises(TimeoutError):
        make_wait_callback(wait, wait)(conn)


@pytest.mark.parametrize("deadline", [None, 0.5])
def test_an_interrupted_connect_is_not_kept_alive_by_the_traceback(
    fakes: FakeFactory, deadline: float | None
) -> None:
    conn = fakes(POLL_READ)
    conn.status = 0  # STATUS_SETUP: connecting

    def wait(fd: int, timeout: float | None = None, /) -> bool:
        raise TimeoutError

    ref = weakref.ref(conn)
    callback = make_wait_callback(wait, wait)
    try:
        callback(conn, deadline)
    except TimeoutError as exc:
        kept = exc  # a caller that keeps the exception (a log record, a task result)
    fakes.made.clear()
    conn.close()
    del conn
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    assert kept.__traceback__ is not None
