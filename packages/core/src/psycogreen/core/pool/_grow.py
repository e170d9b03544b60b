# SPDX-License-Identifier: BSD-3-Clause
"""How the pool grows, shrinks and stops: connects, backoff, the sweep of idle connections.

Connects run in tasks of the scheduler (at most ``num_workers`` at once), each holding a slot
reserved before it starts; where the scheduler has no tasks (uWSGI), in the requests that need
a connection. A task interrupted anywhere (killed by ``close()``) releases its slot and closes
what it opened.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from time import monotonic

from psycogreen.core import _timeout, events
from psycogreen.core._inflight import current_task
from psycogreen.core._types import Event, Task
from psycogreen.core.pool import _conn
from psycogreen.core.pool._backoff import Backoff, jitter
from psycogreen.core.pool._base import BasePool, run_callback
from psycogreen.core.pool._errors import PoolClosed
from psycogreen.core.pool._state import GONE, IDLE, Entry

__all__ = ["GrowingPool"]

logger = logging.getLogger("psycogreen.pool")
_INF = float("inf")

_open_lock = threading.Lock()  # open() of two threads at once: the lock is made there


def _me() -> object:
    """The running task: its greenlet, else its thread."""
    task = current_task()
    return task if task is not None else threading.get_ident()


def _maintain(ref: weakref.ref[GrowingPool], stop: Event, interval: float, serial: int) -> None:
    """Every ``interval``: close idle connections past ``max_idle`` or ``max_lifetime``.

    It holds the pool weakly, between sweeps too: a pool dropped without ``close()`` is
    collected, and this task ends at its next round.
    """
    pool = ref()
    if pool is None:
        return
    pool._task_started(serial)  # noqa: SLF001 (the pool's own task)
    del pool
    try:
        while not stop.wait(interval):
            pool = ref()
            if pool is None:
                return
            pool._sweep(monotonic())  # noqa: SLF001
            del pool
    finally:
        pool = ref()
        if pool is not None:
            pool._task_ended(serial)  # noqa: SLF001


class GrowingPool(BasePool):
    """The pool's background work: opening, replacing and closing connections."""

    def _discard(self, entry: Entry, reason: str = "broken") -> None:
        """Stop managing ``entry``: close its connection, open another if one is wanted.

        ``reason``: why, for the event (:class:`~psycogreen.core.events.PoolConnectionDiscarded`).
        """
        self._report_discard(entry, reason)
        with self._lock:
            if entry.state == IDLE:
                self._idle.remove(entry)
            else:
                self._out.pop(id(entry.conn), None)
            entry.state = GONE
            wanted = 0 if self._closed else self._reserve_locked()
        _conn.close_quietly(entry.conn)
        self._start_connectors(wanted)

    def _report_discard(self, entry: Entry, reason: str) -> None:
        """The event of a connection closed instead of kept (when anyone listens)."""
        if events.listening():
            pid, host, port = events.server_of(entry.conn)
            record = events.PoolConnectionDiscarded(
                pool=self.name, reason=reason, pid=pid, host=host, port=port
            )
            events.emit(record)

    # -- growth ----------------------------------------------------------------------------

    def _demand_locked(self, held: int = 0) -> bool:
        """Whether one more connection is wanted, ``held`` slots of the caller aside."""
        size = self._size_locked() - held
        if size >= self._max_size:
            return False
        return size < self._min_size or len(self._waiting) > self._opening - held

    def _reserve_locked(self) -> int:
        """Reserve the slots of the connects to start now (the caller starts them); their number.

        At most ``num_workers`` connects run at once; each one goes on opening while more are
        wanted. A waiter does not wait for a particular connect: it takes the first
        connection that is free, returned or new.
        """
        size = self._size_locked()
        room = self._max_size - size
        wanted = max(self._min_size - size, len(self._waiting) - self._opening)
        count = min(room, wanted, self.num_workers - self._opening)
        if count <= 0:
            return 0
        self._opening += count
        return count

    def _start_connectors(self, count: int) -> int:
        """Start ``count`` connects whose slots are reserved (inline where tasks cannot be had).

        :return: how many inline connects succeeded (0 where tasks connect).
        """
        if not count:
            return 0
        backend = self._backend
        assert backend is not None
        spawn = backend.spawn
        started = opened = 0
        try:
            for _ in range(count):
                if spawn is None:
                    started += 1
                    opened += self._connect_inline()
                else:
                    self._spawn(spawn, self._connector)
                    started += 1
        finally:
            if started < count:  # interrupted while starting them: release the rest
                with self._lock:
                    self._opening -= count - started
        return opened

    def _spawn(
        self, spawn: Callable[[Callable[[], object]], Task], func: Callable[[int], None]
    ) -> None:
        with self._lock:
            self._serial += 1
            serial = self._serial
        task = spawn(functools.partial(func, serial))
        with self._lock:
            if serial in self._ended:
                self._ended.discard(serial)
            else:
                self._tasks[serial] = task

    def _task_started(self, serial: int) -> None:
        with self._lock:
            self._task_ids[serial] = _me()

    def _task_ended(self, serial: int) -> None:
        with self._lock:
            self._task_ids.pop(serial, None)
            if self._tasks.pop(serial, None) is None:
                self._ended.add(serial)

    def _open_entry(self, bound: float | None = None) -> Entry:
        """Open and configure a connection: bounded by ``bound``, else by the pool's timeout."""
        stats = self._stats
        stats.connections_num += 1
        start = monotonic()
        try:
            # A connect to a host that never answers must not hold a slot forever: psycogreen's
            # deadline covers the connect only (libpq's connect_timeout, if set, still applies).
            with _timeout.timeout(bound if bound is not None else self.timeout):
                conn = _conn.open_connection(self.conninfo, self.kwargs, self._factory)
        except Exception:
            stats.connections_errors += 1
            raise
        now = monotonic()
        stats.connections_ms += now - start
        try:
            if self._configure is not None:
                run_callback("configure", self._configure, conn)
        except BaseException:
            _conn.close_quietly(conn)
            raise
        expires = now + jitter(self.max_lifetime, -0.05, 0.0)  # not all at once
        return Entry(conn, now, expires, self._generation)

    def _connector(self, serial: int) -> None:
        """A background task holding one reserved slot: open connections while wanted."""
        self._task_started(serial)
        held = True
        attempt: Backoff | None = None
        failures, failed_since = 0, 0.0
        try:
            while not self._closed:
                try:
                    entry = self._open_entry()
                except Exception as exc:  # noqa: BLE001 (any failure: retry, as psycopg_pool does)
                    if not failures:
                        failed_since = monotonic()
                    failures += 1
                    attempt = self._backoff(attempt, exc)
                    if attempt is None:  # closed, or no longer wanted: the slot is released
                        held = False
                        return
                    continue
                if failures and events.listening():
                    pid, host, port = events.server_of(entry.conn)
                    seconds = monotonic() - failed_since
                    events.emit(
                        events.PoolReconnected(
                            pool=self.name,
                            attempts=failures + 1,
                            seconds=seconds,
                            pid=pid,
                            host=host,
                            port=port,
                        )
                    )
                failures = 0
                attempt = None
                with self._lock:
                    self._opening -= 1
                    held = False
                    close = self._give_new_locked(entry)
                    if not self._closed and self._demand_locked():
                        self._opening += 1
                        held = True
                if close is not None:
                    _conn.close_quietly(close)
                if not held:
                    return
        finally:
            if held:
                with self._lock:
                    self._opening -= 1
            self._task_ended(serial)

    def _backoff(self, attempt: Backoff | None, exc: Exception) -> Backoff | None:
        """Wait before the next attempt; ``None`` (the slot released) if there is to be none."""
        now = monotonic()
        logger.warning("pool %r: connecting failed: %s", self.name, exc)
        if attempt is None:
            attempt = Backoff(self.reconnect_timeout, now)
        elif attempt.expired(now):
            self._give_up()
            attempt = Backoff(self.reconnect_timeout, now)
        assert self._stop is not None
        stopped = self._stop.wait(attempt.next_delay(now))
        with self._lock:
            if stopped or self._closed or not self._demand_locked(held=1):
                self._opening -= 1
                return None
        return attempt

    def _connect_inline(self) -> bool:
        """One connect, in the calling task, for a slot already reserved (no tasks to spawn)."""
        try:
            entry = self._open_entry()
        except Exception as exc:  # noqa: BLE001 (the requests that need it wait, or time out)
            logger.warning("pool %r: connecting failed: %s", self.name, exc)
            with self._lock:
                self._opening -= 1
            return False
        except BaseException:
            with self._lock:
                self._opening -= 1
            raise
        with self._lock:
            self._opening -= 1
            close = self._give_new_locked(entry)
        if close is not None:
            _conn.close_quietly(close)
        return True

    def _give_up(self) -> None:
        logger.warning(
            "pool %r: reconnecting failed for %s s; calling reconnect_failed",
            self.name,
            self.reconnect_timeout,
        )
        callback = self._reconnect_failed
        if callback is None:
            return
        try:
            callback(self)
        except Exception:
            logger.exception("pool %r: the reconnect_failed callback failed", self.name)

    # -- idle connections ------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        return min(60.0, max(0.01, min(self.max_idle, self.max_lifetime) / 4))

    def _sweep(self, now: float) -> None:
        """Close idle connections past their lifetime, and above ``min_size`` past ``max_idle``."""
        drop: list[Entry] = []
        with self._lock:
            if self._closed:
                return
            self._next_sweep = now + self._sweep_interval() if self._next_sweep < _INF else _INF
            extra = self._size_locked() - self._min_size
            keep: list[Entry] = []
            reasons: list[str] = []
            for entry in self._idle:  # the least recently used first
                expired = entry.expires <= now or entry.generation != self._generation
                if expired or (extra > 0 and now - entry.since >= self.max_idle):
                    drop.append(entry)
                    reasons.append("expired" if expired else "idle")
                    extra -= 1
                else:
                    keep.append(entry)
            if not drop:
                return
            self._idle[:] = keep
            for entry in drop:
                entry.state = GONE
            wanted = self._reserve_locked()
        for entry, reason in zip(drop, reasons, strict=True):
            self._report_discard(entry, reason)
            _conn.close_quietly(entry.conn)
        self._start_connectors(wanted)

    # -- open and close --------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:  # noqa: FBT001, FBT002 (psycopg_pool's signature)
        """Open the pool: start filling it to ``min_size`` in the background, accept requests.

        The scheduler's primitives are those of psycopg2's wait callback now: open the pool
        after patching. Opening an open pool does nothing; a closed pool cannot be reopened.
        Where the scheduler has no tasks of its own (uWSGI), the pool is filled by the
        requests that need connections.

        :param wait: wait for ``min_size`` connections, as :meth:`wait` does.
        :raises PoolClosed: the pool was closed.
        """
        with _open_lock:
            if not self._closed:
                return
            if self._opened:
                message = f"the pool {self.name!r} was closed: a closed pool cannot be reopened"
                raise PoolClosed(message)
            from psycogreen.core.backend import current_backend  # noqa: PLC0415 (loads the registry)

            backend = current_backend()
            self._backend = backend
            self._lock = backend.lock()
            self._stop = backend.event()
            with self._lock:
                self._opened = True
                self._closed = False
                wanted = self._start_initial_locked()
        if not self._keeps_idle:
            pass
        elif backend.spawn is not None:
            maintain = functools.partial(
                _maintain, weakref.ref(self), self._stop, self._sweep_interval()
            )
            self._spawn(backend.spawn, maintain)
        else:
            self._next_sweep = monotonic() + self._sweep_interval()
        self._start_connectors(wanted)
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until the pool is ready (each kind of pool says what that is)."""
        raise NotImplementedError

    def _start_initial_locked(self) -> int:
        if self._backend is not None and self._backend.spawn is None:
            return 0  # no task to fill it: the first requests do
        return self._reserve_locked()

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: fail the waiting requests, close the idle connections, stop its tasks.

        Requests then raise :class:`PoolClosed`; connections still handed out are closed when
        they are returned. The background tasks get ``timeout`` seconds to end, then are
        killed (a connect in progress is abandoned and closed).
        """
        lock = self._lock
        if lock is None:
            self._opened = True
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            waiters = list(self._waiting)
            self._waiting.clear()
            for waiter in waiters:
                waiter.error = PoolClosed(f"the pool {self.name!r} is closed")
                waiter.event.set()
            for entry in idle:
                entry.state = GONE
            if self._full is not None:
                self._full.set()  # a wait() in progress ends: it raises PoolClosed
            tasks = dict(self._tasks)
            me = _me()
            inside = any(ident is me for ident in self._task_ids.values())
        assert self._stop is not None
        self._stop.set()
        for entry in idle:
            _conn.close_quietly(entry.conn)
        if inside:
            return  # called by a task of this pool (reconnect_failed): the others end by themselves
        deadline = monotonic() + timeout
        for task in tasks.values():
            task.join(max(0.0, deadline - monotonic()))
        with lock:
            remaining = [task for serial, task in tasks.items() if serial in self._tasks]
        for task in remaining:
            logger.warning("pool %r: a task still runs after %s s; killing it", self.name, timeout)
            task.kill()

    def __enter__(self) -> GrowingPool:  # noqa: PYI034 (3.10 has no typing.Self; subclasses override)
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_full(self, timeout: float) -> bool:
        """Wait until ``min_size`` connections are idle; whether they were within ``timeout``."""
        backend = self._backend
        assert backend is not None
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if len(self._idle) >= self._min_size:
                return True
            full = self._full = backend.event()
            wanted = self._reserve_locked()
        try:
            if backend.spawn is None:
                # No task to fill it: this one does, until a round of connects all fail.
                while wanted and self._start_connectors(wanted):
                    with self._lock:
                        wanted = 0 if self._closed else self._reserve_locked()
            else:
                self._start_connectors(wanted)
            full.wait(timeout)
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                return len(self._idle) >= self._min_size or full.is_set()
        finally:
            with self._lock:
                self._full = None
