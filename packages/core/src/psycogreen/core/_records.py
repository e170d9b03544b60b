# SPDX-License-Identifier: BSD-3-Clause
"""The records psycogreen's events deliver: one frozen dataclass per kind of event.

A record names the connection it is about by its server's backend pid, host and port (as
libpq reports them), never by the statement, its parameters or the password. Each kind has a
``kind`` name (``"statement_cancelled"``, ...) for logs and metric labels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal

__all__ = [
    "CancelFinished",
    "CancelOutcome",
    "CancelReason",
    "ConnectAttempt",
    "CopyInterrupted",
    "DeadlineExpired",
    "EventRecord",
    "HubBlocked",
    "LoopBlocked",
    "PoolCheckoutTimedOut",
    "PoolCheckoutWaited",
    "PoolConnectionDiscarded",
    "PoolReconnected",
    "StatementCancelled",
    "WaitTimed",
]

#: Why an operation was stopped: its psycogreen deadline, the hub's own bound (an operation run
#: by the hub itself), the scheduler's timeout, a kill, Ctrl-C, or any other exception thrown
#: into the waiting task.
CancelReason = Literal["deadline", "hub", "timeout", "kill", "ctrl-c", "error"]
#: What became of a cancel request: the server took it, it could not be sent (or was given up
#: at the cancel timeout), or it was still under way when the caller went on and finishes in a
#: background task (a :class:`CancelFinished` follows).
CancelOutcome = Literal["sent", "failed", "background"]


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """What every record has: its ``kind``, and the server of the connection it is about.

    ``pid`` is the server's backend pid (``None`` before the connection is made), ``host`` and
    ``port`` the server's as libpq reports them (a socket directory for a unix socket).
    """

    kind: ClassVar[str] = "event"

    pid: int | None = None
    host: str | None = None
    port: int | None = None

    def describe(self) -> str:
        """One line: the kind, then every field as ``name=value`` (``None`` fields left out)."""
        parts = [self.kind]
        # The kind's own fields first, the connection's last.
        names = [item.name for item in fields(self) if item.name not in _SERVER]
        for name in [*names, *_SERVER]:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, float):
                parts.append(f"{name}={value:.6f}".rstrip("0").rstrip("."))
            else:
                parts.append(f"{name}={value}")
        return " ".join(parts)


_SERVER = ("pid", "host", "port")


@dataclass(frozen=True, kw_only=True)
class StatementCancelled(EventRecord):
    """A running statement was cancelled on the server, and why.

    Emitted once the cancel's outcome is known to the task that was stopped.
    """

    kind: ClassVar[str] = "statement_cancelled"

    #: Numbers the cancels of the process; a :class:`CancelFinished` carries the same.
    cancel_id: int
    reason: CancelReason
    outcome: CancelOutcome
    #: Seconds from the start of the cancel to its outcome (the server's answer included when
    #: the connection is kept).
    seconds: float
    #: Whether the connection stays open (psycopg2 raises ``QueryCanceled``; roll back and go
    #: on); false when psycopg2 closes it.
    kept: bool


@dataclass(frozen=True, kw_only=True)
class CancelFinished(EventRecord):
    """A cancel request left to a background task (outcome ``"background"``) has finished."""

    kind: ClassVar[str] = "cancel_finished"

    cancel_id: int
    #: ``"sent"`` once the server took the request, ``"failed"`` if it gave up.
    outcome: Literal["sent", "failed"]
    #: Seconds since the cancel began.
    seconds: float


@dataclass(frozen=True, kw_only=True)
class DeadlineExpired(EventRecord):
    """A psycogreen deadline (``timeout()``, ``set_timeout()``, ``connect_timeout``) ran out."""

    kind: ClassVar[str] = "deadline_expired"

    #: What was running: a statement (a cancel follows), a connection attempt, or a COPY.
    operation: Literal["statement", "connect", "copy"]
    #: The limit, in seconds, when known.
    limit: float | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectAttempt(EventRecord):
    """One connection attempt to one address of one host, and how it ended.

    A ``"failed"`` or ``"timed_out"`` attempt followed by another one is a fail-over to the
    next address or host. ``host`` is the host as given (``None`` for libpq's default), and
    ``hostaddr`` the address tried.
    """

    kind: ClassVar[str] = "connect_attempt"

    hostaddr: str | None = None
    outcome: Literal["connected", "failed", "timed_out", "interrupted"]
    seconds: float
    #: The attempt's limit in seconds (``connect_timeout``, or what was left of a deadline).
    limit: float | None = None
    #: libpq's message for a failed attempt (it names the server, never the password).
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class HubBlocked(EventRecord):
    """An operation ran in the scheduler's own loop, where no task can wait: it blocked them all.

    A loop callback, or a finalizer or signal handler the loop ran; psycogreen completes the
    operation, bounded, instead of failing it (see the hub's own context in the docs).
    """

    kind: ClassVar[str] = "hub_blocked"

    scheduler: str
    #: Seconds every task was blocked.
    seconds: float
    #: The bound the operation had (its deadline, else ``HUB_BLOCK_TIMEOUT``).
    bound: float


@dataclass(frozen=True, kw_only=True)
class LoopBlocked(EventRecord):
    """The scheduler's monitor found its loop blocked by psycopg2 or psycopg outside psycogreen.

    Emitted by psycogreen-gevent when gevent's monitor thread reports the loop blocked
    (``EventLoopBlocked``) inside a psycopg2 or psycopg call that did not go through
    psycogreen's wait callback; emitted in the monitor's thread.
    """

    kind: ClassVar[str] = "loop_blocked"

    scheduler: str
    #: ``"not_patched"`` (psycopg2 has no wait callback), ``"foreign_callback"`` (another
    #: one, which blocks), ``"psycopg3"`` (psycopg 3 waiting in C), ``"blocking_call"``
    #: (a psycopg2 call no wait callback covers), ``"unknown"``.
    cause: Literal["not_patched", "foreign_callback", "psycopg3", "blocking_call", "unknown"]
    #: The call site found in the blocked task's stack: ``file:line in function``.
    site: str
    #: The monitor's threshold: the loop was blocked at least that long.
    blocked_for: float
    #: The installed wait callback (``module.name``), ``None`` if there is none.
    callback: str | None = None
    #: The cause and the fix, in a sentence.
    advice: str = ""


@dataclass(frozen=True, kw_only=True)
class CopyInterrupted(EventRecord):
    """A COPY was stopped half-way and cleaned up: cancelled on the server, or closed."""

    kind: ClassVar[str] = "copy_interrupted"

    reason: CancelReason
    #: Where it was: ``"wait"`` (statement sent), ``"in"`` (FROM STDIN data), ``"out"`` (TO
    #: STDOUT data), ``"end"`` (results pending).
    phase: str
    #: ``"stopped"``: the COPY ended on the server and the connection stays open;
    #: ``"closed"``: the cleanup failed within the cancel timeout and the connection was closed.
    outcome: Literal["stopped", "closed"]
    seconds: float


@dataclass(frozen=True, kw_only=True)
class WaitTimed(EventRecord):
    """One wait of the wait callback, timed (only for subscribers of per-wait timing)."""

    kind: ClassVar[str] = "wait_timed"

    direction: Literal["read", "write"]
    seconds: float
    #: ``False`` when the wait ended without the socket being ready (its deadline, or an
    #: interrupt).
    ready: bool


# --- the pool's events (emitted by psycogreen.core.pool) -------------------------------------


@dataclass(frozen=True, kw_only=True)
class PoolCheckoutWaited(EventRecord):
    """A checkout found no idle connection and waited for one (it got one)."""

    kind: ClassVar[str] = "pool_checkout_waited"

    pool: str
    seconds: float
    #: Connections open, and checked out, when the wait ended.
    size: int
    in_use: int
    #: Other tasks still waiting.
    waiting: int


@dataclass(frozen=True, kw_only=True)
class PoolCheckoutTimedOut(EventRecord):
    """A checkout waited its whole timeout without getting a connection."""

    kind: ClassVar[str] = "pool_checkout_timed_out"

    pool: str
    seconds: float
    size: int
    in_use: int
    waiting: int


@dataclass(frozen=True, kw_only=True)
class PoolConnectionDiscarded(EventRecord):
    """The pool closed a connection instead of keeping it, and why.

    ``reason``: ``"broken"`` (lost, or failed its check), ``"reset_failed"`` (could not be
    reset when returned), ``"in_transaction"`` (returned inside a transaction it could not
    end), ``"expired"`` (older than the pool's lifetime), ``"idle"`` (idle longer than
    allowed), ``"closed"`` (closed by its user), ``"pool_closed"``.
    """

    kind: ClassVar[str] = "pool_connection_discarded"

    pool: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class PoolReconnected(EventRecord):
    """The pool opened a connection to replace one it lost or discarded."""

    kind: ClassVar[str] = "pool_reconnected"

    pool: str
    #: Attempts it took (1 when the first succeeded).
    attempts: int
    seconds: float
