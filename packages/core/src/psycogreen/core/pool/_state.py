# SPDX-License-Identifier: BSD-3-Clause
"""The pool's records: one per connection it manages, one per waiting request, its counters."""

from __future__ import annotations

from typing import Any

from psycogreen.core._types import Event

__all__ = ["GONE", "IDLE", "OUT", "RETURNING", "Entry", "Stats", "Waiter"]

# Where a connection is (Entry.state).
IDLE = 0  # in the pool, ready to hand out
OUT = 1  # handed out (to a caller, or to a waiter not yet woken)
RETURNING = 2  # being brought back to idle by putconn()
GONE = -1  # no longer managed by the pool (closed, or being closed)


class Entry:
    """A connection the pool manages, and what the pool knows about it."""

    __slots__ = ("conn", "created", "expires", "generation", "since", "state")

    def __init__(self, conn: Any, created: float, expires: float, generation: int) -> None:  # noqa: ANN401 (psycopg2's connection)
        self.conn = conn
        #: When it was opened, and when it is to be replaced (``max_lifetime``, less jitter).
        self.created = created
        self.expires = expires
        #: The pool's ``drain()`` count when it was opened: older ones are replaced.
        self.generation = generation
        #: When it was last handed out (OUT) or put back (IDLE).
        self.since = created
        self.state = OUT


class Waiter:
    """A request waiting for a connection: served (``entry``), failed (``error``) or neither."""

    __slots__ = ("entry", "error", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.entry: Entry | None = None
        self.error: BaseException | None = None


class Stats:
    """psycopg_pool's counters (its names), reset by ``pop_stats()``."""

    __slots__ = (
        "connections_errors",
        "connections_lost",
        "connections_ms",
        "connections_num",
        "requests_errors",
        "requests_num",
        "requests_queued",
        "requests_wait_ms",
        "returns_bad",
        "usage_ms",
    )

    def __init__(self) -> None:
        self.requests_num = 0
        self.requests_queued = 0
        self.requests_errors = 0
        self.returns_bad = 0
        self.connections_num = 0
        self.connections_errors = 0
        self.connections_lost = 0
        # Seconds, reported in whole milliseconds.
        self.requests_wait_ms = 0.0
        self.usage_ms = 0.0
        self.connections_ms = 0.0

    def as_dict(self) -> dict[str, int]:
        """The counters by psycopg_pool's keys; times in milliseconds."""
        return {
            "requests_num": self.requests_num,
            "requests_queued": self.requests_queued,
            "requests_wait_ms": int(self.requests_wait_ms * 1000),
            "requests_errors": self.requests_errors,
            "usage_ms": int(self.usage_ms * 1000),
            "returns_bad": self.returns_bad,
            "connections_num": self.connections_num,
            "connections_ms": int(self.connections_ms * 1000),
            "connections_errors": self.connections_errors,
            "connections_lost": self.connections_lost,
        }
