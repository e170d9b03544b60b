# SPDX-License-Identifier: BSD-3-Clause
"""The pool's state: its settings, its records, its counters, and the hand-off of a connection.

One lock guards the state, and it is never held across a switch point (a wait, a query, a
connect): every critical section is a few list and dict operations. So a task interrupted at
any switch point (killed, timed out, Ctrl-C) never holds the lock, and each place that can be
interrupted puts the state right in an ``except BaseException`` before the exception goes on.

The size counts every connection the pool answers for: idle ones, handed-out ones, and slots
reserved by the tasks opening one. A slot is reserved before a connect starts, so the maximum
holds under any race; it passes to the new connection, or is released, under the lock.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from psycogreen.core._backend import Backend
from psycogreen.core._types import Event, Task
from psycogreen.core.pool import _conn
from psycogreen.core.pool._errors import PoolClosed, PoolError
from psycogreen.core.pool._state import GONE, IDLE, OUT, Entry, Stats, Waiter

__all__ = ["BasePool", "ConnectFailedCB", "run_callback"]

logger = logging.getLogger("psycogreen.pool")

#: ``reconnect_failed``: called with the pool (Any: the pool's own class, a subclass's too).
ConnectFailedCB = Callable[[Any], None]

_INF = float("inf")
#: Every pool, for the errors that name the pool a connection comes from.
pools: weakref.WeakSet[BasePool] = weakref.WeakSet()


def run_callback(name: str, callback: _conn.ConnectionCB, conn: Any) -> None:  # noqa: ANN401 (as ConnectionCB)
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
            entry.state = GONE
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
            entry.state = GONE
            return entry.conn
        return self._give_locked(entry, monotonic())

    def _give(self, entry: Entry) -> None:
        with self._lock:
            if self._closed:
                self._out.pop(id(entry.conn), None)
                entry.state = GONE
                conn = entry.conn
            else:
                conn = self._give_locked(entry, monotonic())
        if conn is not None:
            _conn.close_quietly(conn)
