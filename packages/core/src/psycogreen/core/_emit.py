# SPDX-License-Identifier: BSD-3-Clause
"""Who listens to psycogreen's events, and delivering a record to them.

The subscribers are kept in tuples, replaced whole on every change, so that delivery (from any
task or thread: a background cancel, gevent's monitor thread) iterates a snapshot without a
lock. Code that emits checks :data:`subscribers` first, and builds no record when it is empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from psycogreen.core._records import CancelReason, EventRecord

__all__ = [
    "Subscriber",
    "add",
    "add_reasons",
    "emit",
    "emit_wait",
    "reason_of",
    "remove",
    "sample_every",
    "subscribers",
    "wait_subscribers",
]

Subscriber = Callable[[EventRecord], object]

#: Every subscriber: each gets every record but the per-wait ones.
subscribers: tuple[Subscriber, ...] = ()
#: The subscribers of per-wait timing (also in :data:`subscribers`).
wait_subscribers: tuple[Subscriber, ...] = ()
#: Per-wait timing times one wait in this many (1: every wait).
sample_every = 1
#: Waits left before the next timed one (read and written by the timing callback only).
countdown = 1

_lock = threading.Lock()
_log = logging.getLogger("psycogreen")
_failed: set[int] = set()  # id() of subscribers whose failure was logged already

# What the waiting task's interrupts mean, by exception type (the backends add theirs).
_reasons: dict[type[BaseException], CancelReason] = {KeyboardInterrupt: "ctrl-c"}


def add(fn: Subscriber, *, waits: bool) -> bool:
    """Subscribe ``fn`` (again: a no-op); return whether per-wait timing has just begun."""
    global subscribers, wait_subscribers  # noqa: PLW0603 (replaced whole, read without a lock)
    with _lock:
        if fn not in subscribers:
            subscribers = (*subscribers, fn)
        if waits and fn not in wait_subscribers:
            wait_subscribers = (*wait_subscribers, fn)
            return len(wait_subscribers) == 1
        return False


def remove(fn: Subscriber) -> bool:
    """Unsubscribe ``fn`` (if subscribed); return whether per-wait timing has just ended."""
    global subscribers, wait_subscribers  # noqa: PLW0603
    with _lock:
        subscribers = tuple(s for s in subscribers if s != fn)
        had = bool(wait_subscribers)
        wait_subscribers = tuple(s for s in wait_subscribers if s != fn)
        _failed.discard(id(fn))
        return had and not wait_subscribers


def emit(record: EventRecord) -> None:
    """Deliver ``record`` to every subscriber, in the calling task.

    A subscriber's exception is logged (once per subscriber) and dropped: an event never
    changes what the operation it reports does.
    """
    for fn in subscribers:
        _deliver(fn, record)


def emit_wait(record: EventRecord) -> None:
    """Deliver a per-wait record to the subscribers of per-wait timing."""
    for fn in wait_subscribers:
        _deliver(fn, record)


def _deliver(fn: Subscriber, record: EventRecord) -> None:
    try:
        fn(record)
    except Exception:  # noqa: BLE001 (an event never changes the operation it reports)
        if id(fn) not in _failed:
            _failed.add(id(fn))
            _log.exception("psycogreen event subscriber %r failed on %s", fn, record.kind)


def add_reasons(pairs: Iterable[tuple[type[BaseException], CancelReason]]) -> None:
    """Say what the exceptions a scheduler throws into a waiting task mean."""
    _reasons.update(pairs)


def reason_of(interrupt: BaseException | None) -> CancelReason:
    """Why an operation was stopped: ``"deadline"`` for ``None``, else by the exception's type."""
    if interrupt is None:
        return "deadline"
    for cls in type(interrupt).__mro__:
        reason = _reasons.get(cls)
        if reason is not None:
            return reason
    return "error"
