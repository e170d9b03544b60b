# SPDX-License-Identifier: BSD-3-Clause
"""The poll state machine: the one loop every psycogreen wait callback runs.

psycopg2 calls the wait callback whenever libpq would block (connect, every query and internal
command, named-cursor fetches; psycopg2 ``green.c``). The callback drives ``conn.poll()`` until
``POLL_OK`` and, in between, waits until the socket is readable or writable. A backend supplies
only its waits and primitives (:class:`~psycogreen.core.backend.Backend`); every state, error,
interruption path and fallback lives here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from psycogreen.core import _cancel, _observe, _pollhook, _waits
from psycogreen.core._backend import Backend
from psycogreen.core._compat import (
    POLL_OK,
    POLL_READ,
    POLL_WRITE,
    STATUS_SETUP,
    attempt_error,
    mark_polled,
)
from psycogreen.core._errors import CannotSwitchHere
from psycogreen.core._inflight import ENDING, current_task, inflight
from psycogreen.core._observe import CancelReport, TimedWaits
from psycogreen.core._pollhook import after_ok
from psycogreen.core._records import CancelReason
from psycogreen.core._timeout import limit
from psycogreen.core._types import PollingConnection, WaitCallback, WaitFunc

__all__ = [
    "HUB_BLOCK_TIMEOUT",
    "INTERRUPT_GRACE",
    "build_callback",
    "build_timed_callback",
    "make_wait_callback",
    "on_first_use",
    "recheck",
]

#: Seconds an operation may block the thread where the scheduler cannot switch (the hub's own
#: greenlet), when it has no deadline of its own; it is then cancelled like a deadline.
HUB_BLOCK_TIMEOUT = 5.0
#: Seconds an interrupted operation waits for its cancel request before the interrupt goes on
#: to the caller; a request not sent by then is finished by a task of its own. A live server
#: takes it in a few milliseconds.
INTERRUPT_GRACE = 0.05

_log = logging.getLogger("psycogreen")
_hub_blocked_reported = False

# Whether the first-use hooks are still to run: once per process, on the first operation of
# any psycogreen callback (one global truth test per operation afterwards).
_unchecked = True
_first_use_hooks: list[Callable[[WaitCallback], None]] = []


def on_first_use(hook: Callable[[WaitCallback], None]) -> None:
    """Run ``hook(callback)`` on the first operation a psycogreen callback drives.

    Core's patching layer uses it to find a callback installed without it (the 1.x way).
    """
    _first_use_hooks.append(hook)


def recheck() -> None:
    """Run the first-use hooks again on the next operation (after unpatching)."""
    global _unchecked  # noqa: PLW0603
    _unchecked = True


def _first_use(callback: WaitCallback) -> None:
    global _unchecked  # noqa: PLW0603 (once per process)
    _unchecked = False
    for hook in _first_use_hooks:
        hook(callback)


def build_callback(backend: Backend) -> WaitCallback:  # noqa: C901, PLR0915 (one closure on purpose)
    """Build the psycopg2 wait callback of ``backend``.

    .. versionadded:: 1.1
    """
    wait_read = backend.wait_read
    wait_write = backend.wait_write
    keep = backend.keep_connection_on
    hooks = _pollhook.hooks  # dicts changed in place: bound once
    watchers = _pollhook.watchers

    def wait_callback(conn: PollingConnection, timeout: float | None = None) -> None:  # noqa: C901, PLR0912 (the hot path, one frame)
        try:
            poll = conn.poll
            fileno = conn.fileno
        except AttributeError:
            _not_a_connection(conn)
        if _unchecked:
            _first_use(wait_callback)
        key = id(conn)
        timeout = limit(key, timeout)
        inflight[key] = current_task()
        try:
            if timeout is not None:
                _drive(conn, backend, wait_read, wait_write, timeout)
                return
            # The hot path: every query of every user comes through here. Keep it to the loop.
            # Where the scheduler cannot switch, the backend's wait raises CannotSwitchHere
            # before waiting (it looks the hub up anyway): that costs the hot path nothing.
            state = poll()
            while True:
                while state != POLL_OK:
                    if state == POLL_READ:
                        wait = wait_read
                    elif state == POLL_WRITE:
                        wait = wait_write
                    else:
                        _bad_state(state)
                    try:
                        wait(fileno())
                    except CannotSwitchHere:
                        _unswitchable(conn, backend, None)
                        return
                    except keep as exc:
                        _cancel_and_finish(conn, backend, wait_read, wait_write, exc)
                        return
                    except BaseException as exc:
                        _abandon(conn, backend, wait_read, wait_write, exc)
                        raise
                    state = poll()
                # A COPY or a large object under way somewhere: its hook may go on with this
                # operation (two truth tests per operation otherwise).
                if not (hooks or watchers):
                    return
                state = after_ok(conn)
                if state == POLL_OK:
                    return
        except BaseException as exc:
            if _connecting(conn):
                _release(exc)
                conn = poll = fileno = None  # type: ignore[assignment]
            raise
        finally:
            inflight.pop(key, None)

    name = backend.callback_name or f"{backend.name}_wait_callback"
    wait_callback.__name__ = wait_callback.__qualname__ = name
    wait_callback.__module__ = backend.callback_module or f"psycogreen.{backend.name}"
    wait_callback.__doc__ = _CALLBACK_DOC
    return wait_callback


def build_timed_callback(backend: Backend) -> WaitCallback:
    """Build the twin of :func:`build_callback`'s callback that times its waits.

    Installed in place of the normal callback while someone subscribes to per-wait timing
    (:func:`psycogreen.core.events.subscribe` with ``waits=True``), so that the normal one's
    hot path stays as it is. Every wait goes through :func:`_drive` with the backend's waits
    wrapped by :class:`~psycogreen.core._observe.TimedWaits`.
    """
    wait_read = backend.wait_read
    wait_write = backend.wait_write

    def timed_wait_callback(conn: PollingConnection, timeout: float | None = None) -> None:
        try:
            conn.poll  # noqa: B018 (the same check as the normal callback's)
            conn.fileno  # noqa: B018
        except AttributeError:
            _not_a_connection(conn)
        if _unchecked:
            _first_use(timed_wait_callback)
        key = id(conn)
        timeout = limit(key, timeout)
        inflight[key] = current_task()
        waits = TimedWaits(conn, wait_read, wait_write)
        try:
            _drive(conn, backend, waits.read, waits.write, timeout)
        except BaseException as exc:
            if _connecting(conn):
                _release(exc)
                conn = waits = None  # type: ignore[assignment]
            raise
        finally:
            inflight.pop(key, None)

    name = f"{backend.callback_name or f'{backend.name}_wait_callback'}_timed"
    timed_wait_callback.__name__ = timed_wait_callback.__qualname__ = name
    timed_wait_callback.__module__ = backend.callback_module or f"psycogreen.{backend.name}"
    timed_wait_callback.__doc__ = _CALLBACK_DOC
    return timed_wait_callback


def make_wait_callback(
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    *,
    name: str = "wait_callback",
    module: str = __name__,
    keep_connection_on: tuple[type[BaseException], ...] = (),
) -> WaitCallback:
    """Build a psycopg2 wait callback that waits with ``wait_read`` and ``wait_write``.

    The callback of a :class:`~psycogreen.core.backend.Backend` made of these waits alone; a
    backend author registers a whole record instead (:mod:`psycogreen.core.backend`).

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
    backend = Backend(
        name=name,
        wait_read=wait_read,
        wait_write=wait_write,
        spawn=None,  # unknown waits: no task of ours may wait with them
        keep_connection_on=keep_connection_on,
        callback_name=name,
        callback_module=module,
    )
    return build_callback(backend)


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


def _drive(  # noqa: PLR0913, PLR0917 (the loop's state, passed on)
    conn: PollingConnection,
    backend: Backend | None,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    timeout: float | None,
    why: CancelReason = "deadline",
) -> None:
    """The loop with a deadline (or none): every path but the hot one.

    ``backend`` is ``None`` where the scheduler cannot switch: the waits then block the thread,
    and so does any cancel. ``why`` names the deadline for the events: a psycogreen deadline,
    or the hub's own bound.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    keep = backend.keep_connection_on if backend is not None else ()
    state = _poll_hooked(conn)
    while state != POLL_OK:
        wait = _choose(state, wait_read, wait_write)
        try:
            if deadline is None:
                ready = wait(conn.fileno())
            else:
                remaining = deadline - time.monotonic()
                ready = remaining > 0 and wait(conn.fileno(), remaining)
        except CannotSwitchHere:
            assert backend is not None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _unswitchable(conn, backend, left)
            return
        except keep as exc:
            _cancel_and_finish(conn, backend, wait_read, wait_write, exc)
            return
        except BaseException as exc:
            _abandon(conn, backend, wait_read, wait_write, exc)
            raise
        if not ready:
            if id(conn) in _pollhook.settling:
                # A COPY ended for this deadline (``_copy_execute``): its cancel is sent, and
                # the server's answer, which psycopg2 reads, is what is left to wait for.
                _pollhook.settling.discard(id(conn))
                deadline = time.monotonic() + _cancel.cancel_timeout()
                continue
            connecting = _connecting(conn)
            if why == "deadline":
                _observe.deadline_expired(conn, "connect" if connecting else "statement", timeout)
            if connecting:
                _raise_connect_timeout(timeout)
            _cancel_and_finish(conn, backend, wait_read, wait_write, None, why)
            return
        state = _poll_hooked(conn)


def _poll_hooked(conn: PollingConnection) -> int:
    """``conn.poll()``, through the hooks of a COPY or a large object at ``POLL_OK``."""
    state = conn.poll()
    if state == POLL_OK and (_pollhook.hooks or _pollhook.watchers):
        return _pollhook.after_ok(conn)
    return state


def _unswitchable(conn: PollingConnection, backend: Backend, timeout: float | None) -> None:
    """Drive ``conn`` where the scheduler cannot switch, blocking this thread on the socket.

    The backend's wait raised :class:`CannotSwitchHere` before waiting. In a thread with no hub
    nothing else could run anyway. In the hub's own greenlet (a loop
    callback, a finalizer or signal handler the hub runs: SQLAlchemy returning a collected
    connection, gevent#1937) the scheduler cannot wait on itself: failing there would close
    the connection, so the operation completes, blocking every task meanwhile, bounded by its
    deadline or :data:`HUB_BLOCK_TIMEOUT`, and the first time it is reported.
    """
    if not backend.has_hub():
        _drive(conn, None, _waits.wait_read, _waits.wait_write, timeout)
        return
    started = time.monotonic()
    bound = HUB_BLOCK_TIMEOUT if timeout is None else timeout
    try:
        why: CancelReason = "hub" if timeout is None else "deadline"
        _drive(conn, None, _waits.wait_read, _waits.wait_write, bound, why)
    finally:
        seconds = time.monotonic() - started
        _observe.hub_blocked(conn, backend.name, seconds, bound)
        _report_hub_blocked(backend, seconds)


def _report_hub_blocked(backend: Backend, seconds: float) -> None:
    """Log the hub's own context blocking every task: a warning once, then at debug level."""
    global _hub_blocked_reported  # noqa: PLW0603 (reported once per process)
    level = logging.DEBUG if _hub_blocked_reported else logging.WARNING
    _hub_blocked_reported = True
    _log.log(
        level,
        "psycopg2 was called from %s's own loop (a loop callback, or a finalizer or signal "
        "handler the loop ran), where no task can wait: the operation blocked every task for "
        "%.1f ms (at most %g s). Run database work in a task of its own (spawn it).",
        backend.name,
        seconds * 1000,
        HUB_BLOCK_TIMEOUT,
    )


def _send_cancel(  # noqa: PLR0913, PLR0917 (the loop's state, passed on)
    conn: PollingConnection,
    backend: Backend | None,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    grace: float,
    report: CancelReport | None = None,
) -> bool | None:
    """Ask the server to cancel ``conn``'s statement, within the cancel timeout.

    Where the backend has tasks, the request is sent by a task of its own, and this waits for
    it ``grace`` seconds at most: once started, the request is sent (or given up at the cancel
    timeout, its socket closed either way) whatever is thrown into the caller meanwhile, a
    second interrupt included, and whether or not psycopg2 has closed the connection since.
    A request the caller stops waiting for reports its outcome through ``report`` when done.

    :return: ``True`` once the server took the request, ``False`` if it cannot be sent,
        ``None`` if it is still under way after ``grace``.
    """
    request = _cancel.prepare(conn)
    if request is None:
        return False
    deadline = time.monotonic() + _cancel.cancel_timeout()
    if backend is None or backend.spawn is None:
        return request.send(wait_read, wait_write, deadline)
    done = backend.event()
    outcome: list[bool] = []

    def send() -> None:
        try:
            outcome.append(request.send(wait_read, wait_write, deadline))
        finally:
            done.set()
            if report is not None:
                report.finished(sent=bool(outcome and outcome[0]))

    try:
        backend.spawn(send)
    except BaseException:
        request.close()
        raise
    try:
        finished = done.wait(grace)
    except BaseException:
        if report is not None:
            report.gave_up()
        raise
    if not finished and (report is None or report.gave_up()):
        return None
    return outcome[0] if outcome else False


def _cancel_and_finish(  # noqa: PLR0913, PLR0917 (the loop's state, passed on)
    conn: PollingConnection,
    backend: Backend | None,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    interrupt: BaseException | None,
    why: CancelReason = "deadline",
) -> None:
    """Cancel the running statement and poll until the server has answered.

    ``interrupt`` is what made the wait stop (Ctrl-C), ``None`` for an expired deadline. When
    the server answers, ``poll()`` returns ``POLL_OK`` and psycopg2 raises the server's error
    (``QueryCanceled``, SQLSTATE 57014) from the result, keeping the connection (psycopg2
    2.6.2, psycopg2#333). Raising from here instead closes it (``green_panic``). An interrupt
    whose cancel request is not sent within :data:`INTERRUPT_GRACE` goes on to the caller (the
    connection closed, the request finished in the background); a deadline waits for the
    request and then for the answer, each within the cancel timeout.
    """
    if _connecting(conn):
        # Nothing runs on the server yet; psycopg2 refuses to cancel a connection attempt.
        raise attempt_error(timed_out=False)("psycogreen: connection attempt interrupted")
    report = _observe.cancel_started(conn, interrupt, why if interrupt is None else None)
    bound = _cancel.cancel_timeout()
    grace = bound if interrupt is None else INTERRUPT_GRACE
    try:
        sent = _send_cancel(conn, backend, wait_read, wait_write, grace, report)
    except BaseException as exc:  # noqa: BLE001 (one of the two interrupts goes on)
        _observe.cancelled(report, sent=None, kept=False)
        raise _prevailing(exc, interrupt)  # noqa: B904 (its context is set as documented)
    if sent is None and interrupt is not None:
        _observe.cancelled(report, sent=None, kept=False)
        raise interrupt
    if not sent:
        _observe.cancelled(report, sent=None, kept=False)
        _raise_operational(
            "psycogreen: the statement had to be abandoned and the server could not be asked "
            f"to cancel it within {bound:g} s; the connection is closed"
        )
    deadline = time.monotonic() + bound
    state = conn.poll()
    while state != POLL_OK:
        wait = _choose(state, wait_read, wait_write)
        remaining = deadline - time.monotonic()
        # A second interrupt while the server is already cancelling propagates: give up on it.
        try:
            ready = remaining > 0 and wait(conn.fileno(), remaining)
        except BaseException as exc:  # noqa: BLE001 (one of the two interrupts goes on)
            _observe.cancelled(report, sent=sent, kept=False)
            raise _prevailing(exc, interrupt)  # noqa: B904 (its context is set as documented)
        if not ready:
            _observe.cancelled(report, sent=sent, kept=False)
            _raise_operational(
                "psycogreen: the server did not answer a cancel request within "
                f"{bound:g} s; the connection is closed"
            )
        state = conn.poll()
    _observe.cancelled(report, sent=sent, kept=True)


def _abandon(
    conn: PollingConnection,
    backend: Backend | None,
    wait_read: WaitFunc,
    wait_write: WaitFunc,
    interrupt: BaseException,
) -> None:
    """Stop the statement on the server before ``interrupt`` leaves the callback.

    psycopg2 then closes the connection; closing the socket alone would leave the statement
    running to its end. The request is waited for :data:`INTERRUPT_GRACE` at most, so that the
    interrupt reaches the caller on time whatever the network does; a request still under way
    then is finished by its own task, bounded by :func:`set_cancel_timeout`. A failure to
    cancel is not reported: ``interrupt`` is what the caller must see. A second interrupt
    during the grace propagates instead, with ``interrupt`` as its ``__context__``.
    """
    if _connecting(conn):
        return  # nothing runs on the server yet; psycopg2 drops the half-made connection
    report = _observe.cancel_started(conn, interrupt)
    sent: bool | None = False
    try:
        sent = _send_cancel(conn, backend, wait_read, wait_write, INTERRUPT_GRACE, report)
    except Exception:  # noqa: BLE001, S110 (the original exception is what propagates)
        pass
    except BaseException as exc:  # noqa: BLE001 (one of the two interrupts goes on)
        _observe.cancelled(report, sent=None, kept=False)
        raise _prevailing(exc, interrupt)  # noqa: B904 (its context is set as documented)
    _observe.cancelled(report, sent=sent, kept=False)


def _prevailing(second: BaseException, first: BaseException | None) -> BaseException:
    """Which of two interrupts goes on to the caller, the other one as its context.

    ``second`` was thrown in while ``first``'s cancel was under way, and goes on; except that
    an interrupt that ends the task (a kill's ``GreenletExit``, ``KeyboardInterrupt``,
    ``SystemExit``) is never replaced by one that does not: a retry loop catching its own
    ``Timeout`` would otherwise survive its kill. The other one is then its context. Python sets
    ``__context__`` only for an exception raised while another is handled in the same frame
    chain; greenlet's ``throw()`` sets none, so it is set here, as documented.
    """
    if first is None or second is first:
        return second
    if isinstance(first, ENDING) and not isinstance(second, ENDING):
        second, first = first, second
    if second.__context__ is None and first.__context__ is not second:
        second.__context__ = first
    return second


def _release(exc: BaseException) -> None:
    """Drop the references the traceback of ``exc`` holds, in this module, to a connection.

    psycopg2 frees a connection that failed to connect when its last reference goes. Until
    then its socket stays open, and the server keeps a backend waiting for the rest of the
    startup (``authentication_timeout``, one minute by default). A caller that keeps the
    exception (a log record, a task result) would keep it through the callback's frames.
    Also marks ``exc`` as raised while polling (a connect host by host names the server).
    """
    mark_polled(exc)
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals is _GLOBALS or frame.f_globals is _OBSERVE_GLOBALS:
            with contextlib.suppress(RuntimeError):  # still running: the callback, cleared above
                frame.clear()
        tb = tb.tb_next


_GLOBALS = globals()
# The timing callback's waits (TimedWaits) hold the connection too.
_OBSERVE_GLOBALS = vars(_observe)


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


def _raise_connect_timeout(timeout: float | None) -> NoReturn:
    raise attempt_error(timed_out=True)(
        f"psycogreen: connection attempt timed out after {timeout:g} s"
    )


def _not_a_connection(conn: object) -> NoReturn:
    kind = type(conn)
    message = (
        "a psycogreen wait callback needs a psycopg2 connection (with poll() and fileno()), "
        f"not {kind.__module__}.{kind.__qualname__}"
    )
    raise TypeError(message)
