# SPDX-License-Identifier: BSD-3-Clause
"""The pool's state and every change to it: hand-off, discard, growth, background tasks.

One lock guards the state, and it is never held across a switch point (a wait, a query, a
connect): every critical section is a few list and dict operations. So a task interrupted at
any switch point (killed, timed out, Ctrl-C) never holds the lock, and each place that can be
interrupted puts the state right in an ``except BaseException`` before the exception goes on.

The size counts every connection the pool answers for: idle ones, handed-out ones, and slots
reserved by the tasks opening one. A slot is reserved before a connect starts, so the maximum
holds under any race; it passes to the new connection, or is released, under the lock.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from psycogreen.core import _timeout
from psycogreen.core._backend import Backend
from psycogreen.core._inflight import current_task
from psycogreen.core._types import Event, Task
from psycogreen.core.pool import _conn
from psycogreen.core.pool._backoff import Backoff, jitter
from psycogreen.core.pool._errors import PoolClosed, PoolError
from psycogreen.core.pool._state import IDLE, OUT, Entry, Stats, Waiter

__all__ = ["BasePool", "ConnectFailedCB", "run_callback"]

logger = logging.getLogger("psycogreen.pool")

#: ``reconnect_failed``: called with the pool.
ConnectFailedCB = Callable[[Any], None]

_GONE = -1  # Entry.state of a connection the pool no longer manages
_INF = float("inf")
_open_lock = threading.Lock()  # open() of two threads at once: the lock is made there
#: Every pool, for the errors that name the pool a connection comes from.
pools: weakref.WeakSet[BasePool] = weakref.WeakSet()


def _me() -> object:
    """The running task: its greenlet, else its thread."""
    task = current_task()
    return task if task is not None else threading.get_ident()


def run_callback(name: str, callback: _conn.ConnectionCB, conn: Any) -> None:  # noqa: ANN401
    """Run the ``configure`` or ``reset`` callback, which must leave ``conn`` idle."""
    callback(conn)
    status = conn.get_transaction_status()
    if status != _conn.IDLE:
        message = (
            f"the {name} callback {callback!r} left the connection in a transaction (status "
            f"{status}): it must commit or roll back before it returns; the connection is "
            "discarded"
        )
        raise PoolError(message)


def _maintain(ref: weakref.ref[BasePool], stop: Event, interval: float, serial: int) -> None:
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


class BasePool:
    """The state and mechanics shared by :class:`ConnectionPool` and its null variant."""

    _count = 0  # pools made, for their default names
    _keeps_idle = True  # False: a null pool, with nothing to fill or sweep

    def __init__(  # noqa: PLR0913 (psycopg_pool's constructor)
        self,
        conninfo: str | Callable[[], str],
        *,
        connection_class: Any,  # noqa: ANN401 (a psycopg2 connection class)
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
        min_size: int,
        max_size: int | None,
        configure: _conn.ConnectionCB | None,
        check: _conn.ConnectionCB | None,
        reset: _conn.ConnectionCB | None,
        name: str | None,
        close_returns: bool,
        timeout: float,
        max_waiting: int,
        max_lifetime: float,
        max_idle: float,
        reconnect_timeout: float,
        reconnect_failed: ConnectFailedCB | None,
        num_workers: int,
    ) -> None:
        self._min_size, self._max_size = self._check_size(min_size, max_size)
        if num_workers < 1:
            message = f"num_workers must be at least 1, not {num_workers!r}"
            raise ValueError(message)
        for option, value in (
            ("timeout", timeout),
            ("max_lifetime", max_lifetime),
            ("max_idle", max_idle),
            ("reconnect_timeout", reconnect_timeout),
        ):
            if not value > 0:
                message = f"{option} must be a positive number of seconds, not {value!r}"
                raise ValueError(message)
        if max_waiting < 0:
            message = f"max_waiting must be 0 (no limit) or more, not {max_waiting!r}"
            raise ValueError(message)
        if not name:
            BasePool._count += 1
            name = f"pool-{BasePool._count}"
        self.name = name
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.connection_class = connection_class
        self.close_returns = close_returns
        self.timeout = float(timeout)
        self.max_waiting = max_waiting
        self.max_lifetime = float(max_lifetime)
        self.max_idle = float(max_idle)
        self.reconnect_timeout = float(reconnect_timeout)
        self.num_workers = num_workers
        self._configure = configure
        self._check = check
        self._reset = reset
        self._reconnect_failed = reconnect_failed
        self._factory = (
            _conn.returning_class(connection_class) if close_returns else connection_class
        )

        self._backend: Backend | None = None
        self._lock: Any = None  # the backend's lock, made by open()
        self._stop: Event | None = None
        self._opened = False
        self._closed = True
        self._idle: list[Entry] = []  # a stack: the most recently returned goes out first
        self._out: dict[int, Entry] = {}  # id(conn) ->, handed out or being returned
        self._opening = 0  # slots reserved by connects in progress
        self._waiting: OrderedDict[Waiter, None] = OrderedDict()
        self._generation = 0  # drain() count
        self._full: Event | None = None  # wait(): set when min_size connections are idle
        self._stats = Stats()
        self._tasks: dict[int, Task] = {}  # serial -> running background task
        self._task_ids: dict[int, object] = {}  # serial -> the task's greenlet or thread
        self._ended: set[int] = set()  # tasks that ended before they were registered
        self._serial = 0
        self._next_sweep = _INF  # where tasks cannot be spawned, the requests sweep
        pools.add(self)

    def _holds(self, conn: object) -> bool:
        entry = self._out.get(id(conn))
        return entry is not None and entry.conn is conn

    # -- sizes and names -------------------------------------------------------------------

    def _check_size(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        if max_size is None:
            max_size = min_size
        if min_size < 0:
            message = f"min_size cannot be negative ({min_size!r})"
            raise ValueError(message)
        if max_size < min_size:
            message = f"max_size ({max_size!r}) must be at least min_size ({min_size!r})"
            raise ValueError(message)
        if max_size == 0:
            message = "max_size must be at least 1 (min_size and max_size are both 0)"
            raise ValueError(message)
        return min_size, max_size

    @property
    def min_size(self) -> int:
        """The number of connections the pool keeps open."""
        return self._min_size

    @property
    def max_size(self) -> int:
        """The most connections the pool opens, counting those being opened."""
        return self._max_size

    @property
    def closed(self) -> bool:
        """Whether the pool is closed (or not opened yet)."""
        return self._closed

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self.name!r} at 0x{id(self):x}>"

    def _size_locked(self) -> int:
        return len(self._idle) + len(self._out) + self._opening

    def _closed_error(self) -> PoolClosed:
        if self._opened:
            return PoolClosed(f"the pool {self.name!r} is closed")
        return PoolClosed(
            f"the pool {self.name!r} is not open yet: call open() or use it as a context manager"
        )

    # -- stats -----------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """The pool's measures and counters, by psycopg_pool's keys (see ``docs/pool.md``)."""
        return self._stats_dict(self._stats)

    def pop_stats(self) -> dict[str, int]:
        """Like :meth:`get_stats`, and reset the counters to zero."""
        stats, self._stats = self._stats, Stats()
        return self._stats_dict(stats)

    def _stats_dict(self, stats: Stats) -> dict[str, int]:
        lock = self._lock
        if lock is None:
            measures = (0, 0, 0)
        else:
            with lock:
                measures = (self._size_locked(), len(self._idle), len(self._waiting))
        return {
            "pool_min": self._min_size,
            "pool_max": self._max_size,
            "pool_size": measures[0],
            "pool_available": measures[1],
            "requests_waiting": measures[2],
            **stats.as_dict(),
        }

    # -- hand-off and discard --------------------------------------------------------------

    def _give_locked(self, entry: Entry, now: float) -> Any:  # noqa: ANN401 (psycopg2's connection)
        """Hand ``entry`` to the first waiter, else keep it idle; a connection to close, or None.

        ``entry`` is handed out or new: it is in ``_out``, or in no list at all.
        """
        key = id(entry.conn)
        waiting = self._waiting
        if waiting:
            waiter = waiting.popitem(last=False)[0]
            entry.state = OUT
            entry.since = now
            self._out[key] = entry
            waiter.entry = entry
            waiter.event.set()  # schedules the waiter: no switch
            return None
        out = self._out
        out.pop(key, None)
        idle = self._idle
        if len(idle) + len(out) + self._opening >= self._max_size:  # resize() made it smaller
            entry.state = _GONE
            return entry.conn
        entry.state = IDLE
        entry.since = now
        idle.append(entry)
        if self._full is not None and len(idle) >= self._min_size:
            self._full.set()
        return None

    def _give_new_locked(self, entry: Entry) -> Any:  # noqa: ANN401 (psycopg2's connection)
        """:meth:`_give_locked` for a new connection, which a closed pool closes."""
        if self._closed:
            entry.state = _GONE
            return entry.conn
        return self._give_locked(entry, monotonic())

    def _give(self, entry: Entry) -> None:
        with self._lock:
            if self._closed:
                self._out.pop(id(entry.conn), None)
                entry.state = _GONE
                conn = entry.conn
            else:
                conn = self._give_locked(entry, monotonic())
        if conn is not None:
            _conn.close_quietly(conn)

    def _discard(self, entry: Entry) -> None:
        """Stop managing ``entry``: close its connection, open another if one is wanted."""
        with self._lock:
            if entry.state == IDLE:
                self._idle.remove(entry)
            else:
                self._out.pop(id(entry.conn), None)
            entry.state = _GONE
            wanted = 0 if self._closed else self._reserve_locked()
        _conn.close_quietly(entry.conn)
        self._start_connectors(wanted)

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
        try:
            while not self._closed:
                try:
                    entry = self._open_entry()
                except Exception as exc:  # noqa: BLE001 (any failure: retry, as psycopg_pool does)
                    attempt = self._backoff(attempt, exc)
                    if attempt is None:  # closed, or no longer wanted: the slot is released
                        held = False
                        return
                    continue
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
            for entry in self._idle:  # the least recently used first
                expired = entry.expires <= now or entry.generation != self._generation
                if expired or (extra > 0 and now - entry.since >= self.max_idle):
                    drop.append(entry)
                    extra -= 1
                else:
                    keep.append(entry)
            if not drop:
                return
            self._idle[:] = keep
            for entry in drop:
                entry.state = _GONE
            wanted = self._reserve_locked()
        for entry in drop:
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
                entry.state = _GONE
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

    def __enter__(self) -> BasePool:  # noqa: PYI034 (3.10 has no typing.Self; subclasses override)
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
            return full.wait(timeout)
        finally:
            with self._lock:
                self._full = None
