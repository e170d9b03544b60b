# SPDX-License-Identifier: BSD-3-Clause
"""Turning what the slow paths do into event records, only while someone listens.

The poll loop's slow paths (cancel, deadline, the hub's own context), COPY's cleanup and the
host-by-host connect call in here; each helper returns at once when there is no subscriber,
before looking anything up. The hot path of the wait callback never calls in here.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, cast

from psycogreen.core import _emit
from psycogreen.core._conninfo import server_of
from psycogreen.core._errors import CannotSwitchHere
from psycogreen.core._records import (
    CancelFinished,
    CancelOutcome,
    CancelReason,
    ConnectAttempt,
    CopyInterrupted,
    DeadlineExpired,
    HubBlocked,
    StatementCancelled,
    WaitTimed,
)
from psycogreen.core._types import WaitFunc

__all__ = [
    "CancelReport",
    "TimedWaits",
    "cancel_started",
    "cancelled",
    "deadline_expired",
    "hub_blocked",
    "reports_attempt",
    "reports_copy_stop",
]

_ids = itertools.count(1)
R = TypeVar("R")
P = ParamSpec("P")


# --- cancels ----------------------------------------------------------------------------------


class CancelReport:
    """One cancel, from its start to its outcome (and a late outcome, from its own task).

    The request's task and the caller may both learn the outcome: whichever first takes the
    one token decides who reports it. The task takes it when it finishes while the caller still
    waits (the caller reports); the caller takes it when it stops waiting (the task reports a
    :class:`CancelFinished` later). ``list.pop`` is atomic, in threads as in greenlets.
    """

    __slots__ = ("background", "cancel_id", "reason", "server", "started", "token")

    def __init__(self, conn: object, reason: CancelReason) -> None:
        """Start the report of a cancel of ``conn``'s statement."""
        self.cancel_id = next(_ids)
        self.reason = reason
        self.server = server_of(conn)
        self.started = time.monotonic()
        self.token = [True]
        self.background = False

    def _take(self) -> bool:
        try:
            self.token.pop()
        except IndexError:
            return False
        return True

    def gave_up(self) -> bool:
        """The caller stops waiting for the request: ``False`` if it has just finished."""
        self.background = self._take()
        return self.background

    def finished(self, *, sent: bool) -> None:
        """The request's task is done: report it if the caller has gone on without it."""
        if self._take():
            return  # the caller is still waiting: it reports the outcome
        pid, host, port = self.server
        _emit.emit(
            CancelFinished(
                cancel_id=self.cancel_id,
                outcome="sent" if sent else "failed",
                seconds=time.monotonic() - self.started,
                pid=pid,
                host=host,
                port=port,
            )
        )


def cancel_started(
    conn: object, interrupt: BaseException | None, reason: CancelReason | None = None
) -> CancelReport | None:
    """A report for the cancel now starting, or ``None`` when nobody listens."""
    if not _emit.subscribers:
        return None
    return CancelReport(conn, reason or _emit.reason_of(interrupt))


def cancelled(report: CancelReport | None, *, sent: bool | None, kept: bool) -> None:
    """Report the outcome of the cancel as the stopped task sees it."""
    if report is None:
        return
    outcome: CancelOutcome
    if sent:
        outcome = "sent"
    elif report.background:
        outcome = "background"
    else:
        outcome = "failed"
    pid, host, port = report.server
    _emit.emit(
        StatementCancelled(
            cancel_id=report.cancel_id,
            reason=report.reason,
            outcome=outcome,
            seconds=time.monotonic() - report.started,
            kept=kept,
            pid=pid,
            host=host,
            port=port,
        )
    )


# --- deadlines and the hub ----------------------------------------------------------------------


def deadline_expired(
    conn: object, operation: Literal["statement", "connect", "copy"], limit: float | None
) -> None:
    """A psycogreen deadline ran out on ``conn``."""
    if not _emit.subscribers:
        return
    pid, host, port = server_of(conn)
    _emit.emit(DeadlineExpired(operation=operation, limit=limit, pid=pid, host=host, port=port))


def hub_blocked(conn: object, scheduler: str, seconds: float, bound: float) -> None:
    """An operation ran in the scheduler's own loop for ``seconds``."""
    if not _emit.subscribers:
        return
    pid, host, port = server_of(conn)
    _emit.emit(
        HubBlocked(scheduler=scheduler, seconds=seconds, bound=bound, pid=pid, host=host, port=port)
    )


# --- connect attempts ---------------------------------------------------------------------------


class _Attempt(Protocol):
    host: str
    hostaddr: str
    port: str


class _Failures(Protocol):
    def add(self, exc: BaseException, line: str) -> None: ...


class _Watched:
    """The attempt's failure list, passed on, keeping the last failure added through it."""

    def __init__(self, failures: _Failures) -> None:
        self._failures = failures
        self.last: tuple[BaseException, str] | None = None

    def add(self, exc: BaseException, line: str) -> None:
        self.last = (exc, line)
        self._failures.add(exc, line)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (the list's other members)
        return getattr(self._failures, name)


def reports_attempt(
    timed_out: type[BaseException], failed: object = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Report every call of the connect's one-attempt function as a :class:`ConnectAttempt`.

    The function is called ``(connect, dsn, attempt, seconds, failures)``, by position, and
    returns the connection, or ``failed`` after adding the failure to ``failures`` (a factory
    may make ``None`` a connection); a failure of type ``timed_out`` is a timeout.
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
            if not _emit.subscribers:
                return func(*args, **kwargs)
            connect, dsn, target, seconds, failures = args
            watched = _Watched(cast("_Failures", failures))
            call = cast("Callable[..., R]", func)
            where = cast("_Attempt", target)
            limit = cast("float | None", seconds)
            started = time.monotonic()
            try:
                conn = call(connect, dsn, target, seconds, watched)
            except BaseException:
                # Out of time before the attempt began (its failure was added), or stopped.
                stopped: _Outcome = "timed_out" if watched.last is not None else "interrupted"
                _attempted(where, stopped, started, limit, watched.last, None)
                raise
            outcome: _Outcome = "connected"
            if conn is failed:
                timeout = watched.last is not None and isinstance(watched.last[0], timed_out)
                outcome = "timed_out" if timeout else "failed"
            _attempted(
                where, outcome, started, limit, watched.last, None if conn is failed else conn
            )
            return conn

        return attempt

    return decorate


_Outcome = Literal["connected", "failed", "timed_out", "interrupted"]


def _attempted(  # noqa: PLR0913, PLR0917 (one record's fields)
    target: _Attempt,
    outcome: _Outcome,
    started: float,
    limit: float | None,
    failure: tuple[BaseException, str] | None,
    conn: object,
) -> None:
    pid = server_of(conn)[0] if conn is not None else None
    _emit.emit(
        ConnectAttempt(
            host=target.host or None,
            hostaddr=target.hostaddr or None,
            port=int(target.port) if target.port.isdigit() else None,
            outcome=outcome,
            seconds=time.monotonic() - started,
            limit=limit,
            error=failure[1].strip() if failure is not None else None,
            pid=pid,
        )
    )


# --- COPY ---------------------------------------------------------------------------------------


class _Closable(Protocol):
    @property
    def closed(self) -> int: ...


class _Copy(Protocol):
    @property
    def conn(self) -> _Closable: ...

    busy: bool
    phase: str


C = TypeVar("C", bound=_Copy)


def reports_copy_stop(
    expired: type[BaseException],
) -> Callable[[Callable[[C], R]], Callable[[C], R]]:
    """Report a COPY's cleanup (its ``stop()`` method) as a :class:`CopyInterrupted`.

    ``stop()`` runs while the exception that interrupted the COPY is being handled; one of
    type ``expired`` is the COPY's deadline. Nothing is reported when nothing was in flight.
    """

    def decorate(stop: Callable[[C], R]) -> Callable[[C], R]:
        @functools.wraps(stop)
        def reported(copy: C) -> R:
            if not _emit.subscribers or not copy.busy or copy.conn.closed:
                return stop(copy)
            interrupt = sys.exc_info()[1]
            deadline = isinstance(interrupt, expired)
            reason = "deadline" if deadline else _emit.reason_of(interrupt)
            pid, host, port = server_of(copy.conn)
            if deadline:
                _emit.emit(DeadlineExpired(operation="copy", pid=pid, host=host, port=port))
            phase = copy.phase
            started = time.monotonic()
            outcome: Literal["stopped", "closed"] = "closed"
            try:
                result = stop(copy)
                outcome = "stopped"
                return result
            finally:
                _emit.emit(
                    CopyInterrupted(
                        reason=reason,
                        phase=phase,
                        outcome=outcome,
                        seconds=time.monotonic() - started,
                        pid=pid,
                        host=host,
                        port=port,
                    )
                )

        return reported

    return decorate


# --- per-wait timing ----------------------------------------------------------------------------


class TimedWaits:
    """A backend's waits for one operation on ``conn``, timing one wait in ``sample_every``."""

    __slots__ = ("_conn", "_server", "_wait_read", "_wait_write")

    def __init__(self, conn: object, wait_read: WaitFunc, wait_write: WaitFunc) -> None:
        """Wrap ``wait_read`` and ``wait_write`` for an operation on ``conn``."""
        self._conn = conn
        self._wait_read = wait_read
        self._wait_write = wait_write
        self._server: tuple[int | None, str | None, int | None] | None = None

    def read(self, fd: int, timeout: float | None = None, /) -> bool:
        """The backend's ``wait_read``, timed."""
        return self._timed(self._wait_read, "read", fd, timeout)

    def write(self, fd: int, timeout: float | None = None, /) -> bool:
        """The backend's ``wait_write``, timed."""
        return self._timed(self._wait_write, "write", fd, timeout)

    def _timed(
        self,
        wait: WaitFunc,
        direction: Literal["read", "write"],
        fd: int,
        timeout: float | None,
    ) -> bool:
        if _emit.countdown > 1:
            _emit.countdown -= 1
            return wait(fd, timeout)
        _emit.countdown = _emit.sample_every
        started = time.perf_counter()
        try:
            ready = wait(fd, timeout)
        except CannotSwitchHere:
            _emit.countdown = 1  # no wait happened: time the next one
            raise
        except BaseException:
            # Interrupted: the time waited so far is reported, not ready.
            self._report(direction, time.perf_counter() - started, ready=False)
            raise
        self._report(direction, time.perf_counter() - started, ready=ready)
        return ready

    def _report(self, direction: Literal["read", "write"], seconds: float, *, ready: bool) -> None:
        if self._server is None:
            self._server = server_of(self._conn)
        pid, host, port = self._server
        _emit.emit_wait(
            WaitTimed(
                direction=direction, seconds=seconds, ready=ready, pid=pid, host=host, port=port
            )
        )
