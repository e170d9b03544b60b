# SPDX-License-Identifier: BSD-3-Clause
"""The request side of the pool: ``getconn()``, the queue of waiting requests, the check.

Requests are served first come, first served, each bounded by its timeout. A waiter
interrupted at any switch point (killed, timed out, Ctrl-C) leaves the queue; one that had
just been handed a connection passes it, untouched, to the next waiter.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from psycogreen.core import events
from psycogreen.core.pool import _conn
from psycogreen.core.pool._errors import PoolError, PoolTimeout, TooManyRequests
from psycogreen.core.pool._grow import GrowingPool
from psycogreen.core.pool._state import OUT, Entry, Waiter

__all__ = ["RequestingPool"]


class RequestingPool(GrowingPool):
    """Checking connections out: the hot path, the queue, the ``check`` callback."""

    def getconn(self, timeout: float | None = None) -> Any:  # noqa: ANN401 (psycopg2's connection)
        """A connection, which the caller must give back with :meth:`putconn`.

        Prefer :meth:`connection`. Waits up to ``timeout`` seconds (the pool's by default),
        served in order of arrival.

        :raises PoolTimeout: no connection within ``timeout``.
        :raises TooManyRequests: ``max_waiting`` requests are waiting already.
        :raises PoolClosed: the pool is closed.
        """
        if timeout is None:
            timeout = self.timeout
        lock = self._lock
        if lock is None:
            raise self._closed_error()
        # The common case inline (an idle connection, fit to hand out): the hot path. Without
        # one the request is queued in the same critical section, and waits outside it.
        entry: Entry | None
        with lock:
            self._stats.requests_num += 1
            idle = self._idle
            if idle and not self._closed:
                entry = idle.pop()
                entry.state = OUT
                self._out[id(entry.conn)] = entry
                waiter = None
            else:
                entry, waiter, wanted = self._checkout_locked(timeout, timeout)
        if waiter is not None:
            deadline = monotonic() + timeout
            entry = self._wait(waiter, wanted, timeout, timeout)
            if self._ready(entry, monotonic()):
                return entry.conn
            return self._getconn_slow(deadline, timeout)
        assert entry is not None
        conn = entry.conn
        now = monotonic()
        if (
            entry.expires > now
            and entry.generation == self._generation
            and self._check is None
            and now < self._next_sweep
        ):
            entry.since = now
            if self.close_returns:
                setattr(conn, _conn.POOL_ATTRIBUTE, self)
            return conn
        if now >= self._next_sweep:
            self._sweep(now)
        if self._ready(entry, now):
            return conn
        return self._getconn_slow(now + timeout, timeout)

    def _getconn_slow(self, deadline: float, timeout: float) -> Any:  # noqa: ANN401 (as getconn)
        """Wait in the queue, or try again after a connection was discarded."""
        while True:
            with self._lock:
                entry, waiter, wanted = self._checkout_locked(deadline - monotonic(), timeout)
            if entry is None:
                assert waiter is not None
                entry = self._wait(waiter, wanted, deadline - monotonic(), timeout)
            if self._ready(entry, monotonic()):
                return entry.conn

    def _checkout_locked(
        self, remaining: float, timeout: float
    ) -> tuple[Entry | None, Waiter | None, int]:
        """An idle connection, else this request queued: ``(entry, waiter, connects to start)``."""
        if self._closed:
            raise self._closed_error()
        idle = self._idle
        if idle:
            entry = idle.pop()
            entry.state = OUT
            self._out[id(entry.conn)] = entry
            return entry, None, 0
        stats = self._stats
        if self.max_waiting and len(self._waiting) >= self.max_waiting:
            stats.requests_errors += 1
            message = (
                f"the pool {self.name!r} has {len(self._waiting)} requests waiting already "
                f"(max_waiting={self.max_waiting})"
            )
            raise TooManyRequests(message)
        if remaining <= 0:
            stats.requests_errors += 1
            raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} s")
        backend = self._backend
        assert backend is not None
        if not backend.can_switch() and backend.has_hub():
            stats.requests_errors += 1
            message = (
                f"the pool {self.name!r} has no free connection, and this code runs in "
                f"{backend.name}'s hub (a loop callback, a signal handler, a finalizer), "
                "which cannot wait: ask for the connection from a greenlet"
            )
            raise PoolError(message)
        waiter = Waiter(backend.event())
        self._waiting[waiter] = None
        stats.requests_queued += 1
        size = len(idle) + len(self._out) + self._opening
        return None, waiter, self._reserve_locked() if size < self._max_size else 0

    def _ready(self, entry: Entry, now: float) -> bool:
        """Whether a connection just taken can be handed out (else it was discarded)."""
        if entry.expires <= now or entry.generation != self._generation:
            self._discard(entry, "expired")  # past its lifetime, or drained: replaced
            return False
        entry.since = now
        if self._check is not None and not self._checked(entry):
            return False
        if self.close_returns:
            setattr(entry.conn, _conn.POOL_ATTRIBUTE, self)
        return True

    def _wait(self, waiter: Waiter, wanted: int, remaining: float, timeout: float) -> Entry:
        """Wait in the queue, at most ``remaining`` seconds, for a connection."""
        stats = self._stats
        start = monotonic()
        try:
            if wanted:
                if self._backend is not None and self._backend.spawn is None:
                    self._fill_while_waiting(waiter, wanted)
                else:
                    self._start_connectors(wanted)
                remaining -= monotonic() - start
            waiter.event.wait(max(0.0, remaining))
        except BaseException:
            self._leave(waiter, start)
            raise
        entry = waiter.entry  # set before the event was: no lock needed to read it
        if entry is not None:
            stats.requests_wait_ms += monotonic() - start
            self._report_wait(events.PoolCheckoutWaited, start)
            return entry
        with self._lock:
            stats.requests_wait_ms += monotonic() - start
            entry = waiter.entry
            if entry is not None:  # served after the timeout, before this lock
                served = True
            else:
                served = False
                self._waiting.pop(waiter, None)
                stats.requests_errors += 1
                error = waiter.error
        if served:
            self._report_wait(events.PoolCheckoutWaited, start)
            assert entry is not None
            return entry
        if error is not None:
            raise error
        self._report_wait(events.PoolCheckoutTimedOut, start)
        raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} s")

    def _report_wait(
        self, kind: type[events.PoolCheckoutWaited | events.PoolCheckoutTimedOut], start: float
    ) -> None:
        """The event of a checkout that waited (when anyone listens)."""
        if not events.listening():
            return
        size = len(self._idle) + len(self._out)
        record = kind(
            pool=self.name,
            seconds=monotonic() - start,
            size=size,
            in_use=len(self._out),
            waiting=len(self._waiting),
        )
        events.emit(record)

    def _fill_while_waiting(self, waiter: Waiter, wanted: int) -> None:
        """Open connections in this waiting request while more are wanted and it is not served.

        Where the scheduler has no tasks (uWSGI) the waiting requests grow the pool: each
        new connection goes to the first waiter, which may be another request.
        """
        while wanted and self._start_connectors(wanted):  # until a round of connects all fail
            with self._lock:
                done = waiter.entry is not None or self._closed
                wanted = 0 if done else self._reserve_locked()

    def _leave(self, waiter: Waiter, start: float) -> None:
        """A waiter interrupted (killed, timed out): out of the queue; a connection passes on."""
        with self._lock:
            self._stats.requests_wait_ms += monotonic() - start
            self._stats.requests_errors += 1
            entry = waiter.entry
            if entry is None:
                self._waiting.pop(waiter, None)
                return
            waiter.entry = None
        # It was handed over clean and never used: straight to the next waiter, or idle.
        self._give(entry)

    def _checked(self, entry: Entry) -> bool:
        """Run the ``check`` callback: whether the connection passed (else it is discarded)."""
        assert self._check is not None
        try:
            self._check(entry.conn)
        except Exception as exc:  # noqa: BLE001 (any failure: another connection is tried)
            _conn.logger.info("pool %r: connection failed the check: %s", self.name, exc)
            self._stats.connections_lost += 1
            self._discard(entry)
            return False
        except BaseException:
            self._discard(entry)  # interrupted mid-check: its state is unknown
            raise
        return True
