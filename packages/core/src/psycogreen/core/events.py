# SPDX-License-Identifier: BSD-3-Clause
"""What the waits, the cancels, the connects and the pool are doing, as typed records.

Subscribe a function; it is called with a frozen dataclass per event, in the task (or thread)
where the event happened::

    from psycogreen.core import events

    def on_event(record: events.EventRecord) -> None:
        if isinstance(record, events.StatementCancelled):
            print(record.reason, record.outcome, record.seconds, record.pid)

    events.subscribe(on_event)

Nothing is recorded while nobody subscribes, and subscribing costs the per-wait path of the
wait callback nothing: events come from the slow paths only (a cancel, a deadline, a connect
attempt, the hub's own context, a COPY's cleanup, the pool). Per-wait timing
(:class:`WaitTimed`) is the exception: it is asked for with ``waits=True``, and psycopg2's
wait callback is then replaced by a twin that times its waits for as long as such a subscriber
exists. A subscriber must not block: it runs inside the operation it hears about. Its
exceptions are logged (once) and dropped.

.. versionadded:: 1.1
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from psycogreen.core import _emit, _patch
from psycogreen.core._conninfo import server_of
from psycogreen.core._emit import Subscriber
from psycogreen.core._eventlog import LogSubscriber
from psycogreen.core._records import (
    CancelFinished,
    CancelOutcome,
    CancelReason,
    ConnectAttempt,
    CopyInterrupted,
    DeadlineExpired,
    EventRecord,
    HubBlocked,
    LoopBlocked,
    PoolCheckoutTimedOut,
    PoolCheckoutWaited,
    PoolConnectionDiscarded,
    PoolReconnected,
    StatementCancelled,
    WaitTimed,
)

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
    "Subscriber",
    "WaitTimed",
    "emit",
    "listening",
    "log_events",
    "server_of",
    "set_wait_sampling",
    "subscribe",
    "subscribed",
    "unsubscribe",
]


def subscribe(fn: Subscriber, *, waits: bool = False) -> None:
    """Call ``fn(record)`` for every event from now on (subscribing twice is a no-op).

    :param waits: also deliver a :class:`WaitTimed` per wait of the wait callback (sampled
        by :func:`set_wait_sampling`). While any such subscriber exists, psycopg2's wait
        callback is psycogreen's timing twin, which costs every wait the timing.
    """
    if _emit.add(fn, waits=waits):
        _patch.retime()


def unsubscribe(fn: Subscriber) -> None:
    """Stop calling ``fn`` (a no-op if it was not subscribed)."""
    if _emit.remove(fn):
        _patch.retime()


@contextlib.contextmanager
def subscribed(fn: Subscriber, *, waits: bool = False) -> Iterator[Subscriber]:
    """Subscribe ``fn`` for the block (see :func:`subscribe`)."""
    subscribe(fn, waits=waits)
    try:
        yield fn
    finally:
        unsubscribe(fn)


def listening() -> bool:
    """Whether anyone subscribes: code that emits checks it before building a record."""
    return bool(_emit.subscribers)


def emit(record: EventRecord) -> None:
    """Deliver ``record`` to every subscriber: for code above core (the pool) that has events.

    Per-wait records (:class:`WaitTimed`) go to the subscribers of per-wait timing only.
    """
    if isinstance(record, WaitTimed):
        _emit.emit_wait(record)
    else:
        _emit.emit(record)


def set_wait_sampling(every: int) -> None:
    """Time one wait in ``every`` (1, the default: every wait) for per-wait timing.

    The waits in between go straight to the scheduler, which bounds the cost of timing on a
    busy process; each :class:`WaitTimed` then stands for ``every`` waits.
    """
    if not isinstance(every, int) or every < 1:
        message = f"the sampling interval must be a positive whole number, not {every!r}"
        raise ValueError(message)
    _emit.sample_every = every
    _emit.countdown = min(_emit.countdown, every)


def log_events(
    level: int = logging.INFO, *, waits: bool = False, logger: logging.Logger | None = None
) -> Subscriber:
    """Log one line per event on the ``psycogreen`` logger (or ``logger``), at ``level``.

    Off until called. Returns the subscriber: :func:`unsubscribe` it to stop.

    :param waits: log every timed wait too (see :func:`subscribe`): a line per wait.
    """
    subscriber = LogSubscriber(logger or logging.getLogger("psycogreen"), level)
    subscribe(subscriber, waits=waits)
    return subscriber
