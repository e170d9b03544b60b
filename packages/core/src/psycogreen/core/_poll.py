# SPDX-License-Identifier: BSD-3-Clause
"""The poll state machine: the one loop every psycogreen wait callback runs.

psycopg2 calls the wait callback whenever libpq would block (connect, every query and internal
command, named-cursor fetches; psycopg2 ``green.c``). The callback drives ``conn.poll()`` until
``POLL_OK`` and, in between, waits until the socket is readable or writable. A backend supplies
only those two waits; every state, error and interruption path lives here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import NoReturn

from psycogreen.core import _cancel
from psycogreen.core._compat import POLL_OK, POLL_READ, POLL_WRITE, STATUS_SETUP
from psycogreen.core._timeout import UNSET, block_timeout, connection_timeouts
from psycogreen.core._types import PollingConnection, WaitCallback, WaitFunc

__all__ = ["current_task", "inflight", "make_wait_callback", "set_cancel_timeout"]

_cancel_timeout = _cancel.DEFAULT_CANCEL_TIMEOUT

#: The running greenlet (the thread's main greenlet outside any); ``None`` without greenlet.
current_task: Callable[[], object]
try:
    # Not a scheduler: greenlet is the coroutine primitive under gevent and eventlet alike.
    from greenlet import getcurrent as current_task
except ImportError:  # pragma: no cover (no greenlets: only native threads exist)

    def current_task() -> object:
        return None


#: ``id(conn)`` -> the greenlet (``None`` without greenlet) for every connection the
#: callback is driving.
#: psycopg2 holds the connection's mutex (``conn->lock``) all that time, so this is exactly
#: the window in which another greenlet of that thread must not touch the connection: it
#: would block the whole OS thread in ``pthread_mutex_lock`` (``pqpath.c``). The guarded
#: connections (``_guard.py``) read it; one set and one delete per operation, none per wait.
inflight: dict[int, object] = {}


def set_cancel_timeout(seconds: float) -> None:
    """Set how long a server-side cancel may take before psycogreen gives up (default 2 s).

    The bound covers sending the cancel request and, after a timeout, the server's answer to
    it: a server that does not answer within it is treated as gone and the connection is closed.

    .. versionadded:: 1.0
    """
    global _cancel_timeout  # noqa: PLW0603 (one process-wide setting, like the callback itself)
    if not seconds > 0:
        message = f"cancel timeout must be a positive number of seconds, not {seconds!r}"
        raise ValueError(message)
    _cancel_timeout = float(seconds)


def make_wait_callback(  # noqa: C901 (the hot path is one closure on purpose)
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    *,
    name: str = "wait_callback",
    module: str = __name__,
    keep_connection_on: tuple[type[BaseException], ...] = (),
) -> WaitCallback:
    """Build a psycopg2 wait callback that waits with ``wait_read`` and ``wait_write``.

    :param wait_read: wait until an fd is readable (see :class:`~psycogreen.core.WaitFunc`).
    :param wait_write: wait until an fd is writable.
    :param name: the callback's ``__name__`` (the 1.x names: ``gevent_wait_callback``, ...).
    :param module: the callback's ``__module__``.
    :param keep_connection_on: exceptions that, raised by a wait, cancel the statement on the
        server and keep the connection (psycopg2 then raises ``QueryCanceled``). Any other
        exception cancels the statement too and propagates unchanged, which makes psycopg2
        close the connection.
    :return: a callback for ``psycopg2.extensions.set_wait_callback``.

    .. versionadded:: 1.0
    """

    def wait_callback(conn: PollingConnection, timeout: float | None = None) -> None:  # noqa: C901, PLR0912 (the hot path, one frame)
        try:
            poll = conn.poll
            fileno = conn.fileno
        except AttributeError:
            _not_a_connection(conn)
        key = id(conn)
        if timeout is None:
            timeout = block_timeout()
            if timeout == UNSET:  # no timeout() block: the connection's own limit, if any
                timeout = connection_timeouts.get(key) if connection_timeouts else None
        inflight[key] = current_task()
        try:
            if timeout is not None:
                _wait_with_deadline(conn, wait_read, wait_write, timeout, keep_connection_on)
                return
            # The hot path: every query of every user comes through here. Keep it to the loop.
            state = poll()
            while state != POLL_OK:
                if state == POLL_READ:
                    wait = wait_read
                elif state == POLL_WRITE:
                    wait = wait_write
                else:
                    _bad_state(state)
                try:
                    wait(fileno())
                except keep_connection_on:
                    _cancel_and_finish(conn, wait_read, wait_write)
                    return
                except BaseException:
                    _abandon(conn, wait_read, wait_write)
                    raise
                state = poll()
        except BaseException as exc:
            if _connecting(conn):
                _release(exc)
                conn = poll = fileno = None  # type: ignore[assignment]
            raise
        finally:
            inflight.pop(key, None)

    wait_callback.__name__ = wait_callback.__qualname__ = name
    wait_callback.__module__ = module
    wait_callback.__doc__ = _CALLBACK_DOC
    return wait_callback


_CALLBACK_DOC = """Wait for a psycopg2 connection without blocking the scheduler.

Installed with ``psycopg2.extensions.set_wait_callback()`` (``patch_psycopg()`` does it),
psycopg2 calls it with the connection whenever libpq would block.

:param conn: the psycopg2 connection.
:param timeout: a limit in seconds for the operation (bind it with ``functools.partial``);
    ``None`` uses the limit of the enclosing :func:`psycogreen.core.timeout` block, else the
    connection's own (:func:`psycogreen.core.set_timeout`), if any. On expiry the statement is
    cancelled on the server and psycopg2 raises ``QueryCanceled``; the connection stays usable
    after ``rollback()``.
:raises TypeError: ``conn`` is not a psycopg2 connection.
:raises psycopg2.OperationalError: ``poll()`` returned an unknown state, or the server did not
    answer in time.
"""


def _wait_with_deadline(
    conn: PollingConnection,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    timeout: float,
    keep_connection_on: tuple[type[BaseException], ...],
) -> None:
    deadline = time.monotonic() + timeout
    state = conn.poll()
    while state != POLL_OK:
        wait = _choose(state, wait_read, wait_write)
        remaining = deadline - time.monotonic()
        try:
            ready = remaining > 0 and wait(conn.fileno(), remaining)
        except keep_connection_on:
            _cancel_and_finish(conn, wait_read, wait_write)
            return
        except BaseException:
            _abandon(conn, wait_read, wait_write)
            raise
        if not ready:
            if _connecting(conn):
                _raise_operational(f"psycogreen: connection attempt timed out after {timeout:g} s")
            _cancel_and_finish(conn, wait_read, wait_write)
            return
        state = conn.poll()


def _cancel_and_finish(
    conn: PollingConnection,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
) -> None:
    """Cancel the running statement and poll until the server has answered.

    When the server answers, ``poll()`` returns ``POLL_OK`` and psycopg2 raises the server's
    error (``QueryCanceled``, SQLSTATE 57014) from the result, keeping the connection
    (psycopg2 2.6.2, psycopg2#333). Raising from here instead closes it (``green_panic``).
    """
    if _connecting(conn):
        # Nothing runs on the server yet; psycopg2 refuses to cancel a connection attempt.
        _raise_operational("psycogreen: connection attempt interrupted")
    if not _cancel.cancel(conn, wait_read, wait_write, _cancel_timeout):
        _raise_operational(
            "psycogreen: the statement had to be abandoned and the server could not be asked "
            f"to cancel it within {_cancel_timeout:g} s; the connection is closed"
        )
    deadline = time.monotonic() + _cancel_timeout
    state = conn.poll()
    while state != POLL_OK:
        wait = _choose(state, wait_read, wait_write)
        remaining = deadline - time.monotonic()
        # A second interrupt while the server is already cancelling propagates: give up on it.
        ready = remaining > 0 and wait(conn.fileno(), remaining)
        if not ready:
            _raise_operational(
                "psycogreen: the server did not answer a cancel request within "
                f"{_cancel_timeout:g} s; the connection is closed"
            )
        state = conn.poll()


def _abandon(conn: PollingConnection, wait_read: WaitFunc, wait_write: WaitFunc) -> None:
    """Stop the statement on the server before an exception leaves the callback.

    psycopg2 then closes the connection; closing the socket alone would leave the statement
    running to its end.

    The cancel is bounded by :func:`set_cancel_timeout`. A failure to cancel is not reported:
    the exception being handled is what the caller must see. A second interrupt during the
    cancel (an outer timeout, a kill) ends the cancel and propagates instead, as any
    exception raised while handling another does; the first one is its ``__context__``.
    """
    if _connecting(conn):
        return  # nothing runs on the server yet; psycopg2 drops the half-made connection
    try:
        _cancel.cancel(conn, wait_read, wait_write, _cancel_timeout)
    except Exception:  # noqa: BLE001, S110 (the original exception is what propagates)
        pass


def _release(exc: BaseException) -> None:
    """Drop the references the traceback of ``exc`` holds, in this module, to a connection.

    psycopg2 frees a connection that failed to connect when its last reference goes. Until
    then its socket stays open, and the server keeps a backend waiting for the rest of the
    startup (``authentication_timeout``, one minute by default). A caller that keeps the
    exception (a log record, a task result) would keep it through the callback's frames.
    """
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals is _GLOBALS:
            with contextlib.suppress(RuntimeError):  # still running: the callback, cleared above
                frame.clear()
        tb = tb.tb_next


_GLOBALS = globals()


def _choose(state: int, wait_read: WaitFunc, wait_write: WaitFunc) -> WaitFunc:
    if state == POLL_READ:
        return wait_read
    if state == POLL_WRITE:
        return wait_write
    return _bad_state(state)


# psycopg2 (connection.h, conn_poll()): a connection is CONN_STATUS_SETUP (0) until its first
# poll(), then CONN_STATUS_CONNECTING (20, not exported) until libpq has connected.
_CONNECTING = (STATUS_SETUP, 20)


def _connecting(conn: PollingConnection) -> bool:
    return getattr(conn, "status", None) in _CONNECTING


def _bad_state(state: object) -> NoReturn:
    _raise_operational(f"bad result from poll: {state!r}")


def _raise_operational(message: str) -> NoReturn:
    import psycopg2  # noqa: PLC0415 (psycopg2 is optional; this is an error path)

    raise psycopg2.OperationalError(message)


def _not_a_connection(conn: object) -> NoReturn:
    kind = type(conn)
    message = (
        "a psycogreen wait callback needs a psycopg2 connection (with poll() and fileno()), "
        f"not {kind.__module__}.{kind.__qualname__}"
    )
    raise TypeError(message)
