# SPDX-License-Identifier: BSD-3-Clause
"""``NullConnectionPool``: the pool's API and limits without keeping connections.

Each request opens its own connection, in the requesting task, unless ``max_size`` are open:
then it waits in the queue and is handed a connection another request returns. A returned
connection nobody waits for is closed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from psycogreen.core.pool import _conn
from psycogreen.core.pool._base import ConnectFailedCB
from psycogreen.core.pool._errors import PoolTimeout
from psycogreen.core.pool._pool import ConnectionPool
from psycogreen.core.pool._state import GONE, OUT, Entry

__all__ = ["NullConnectionPool"]


class NullConnectionPool(ConnectionPool):
    """A pool that keeps no idle connection: ``min_size`` 0; ``max_size`` 0 or ``None``: no limit.

    It takes :class:`ConnectionPool`'s parameters; connections are opened by the requests
    themselves, so there is no background task.

    .. versionadded:: 1.1
    """

    _keeps_idle = False

    def __init__(  # noqa: PLR0913 (psycopg_pool's constructor)
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: Any = None,  # noqa: ANN401 (a psycopg2 connection class)
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 0,
        max_size: int | None = None,
        open: bool = True,  # noqa: A002 (psycopg_pool's name)
        configure: _conn.ConnectionCB | None = None,
        check: _conn.ConnectionCB | None = None,
        reset: _conn.ConnectionCB | None = None,
        name: str | None = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 60 * 60.0,
        max_idle: float = 10 * 60.0,
        reconnect_timeout: float = 5 * 60.0,
        reconnect_failed: ConnectFailedCB | None = None,
        num_workers: int = 3,
    ) -> None:
        super().__init__(
            conninfo,
            connection_class=connection_class,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=open,
            configure=configure,
            check=check,
            reset=reset,
            name=name,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
            num_workers=num_workers,
        )

    def _check_size(self, min_size: int, max_size: int | None) -> tuple[int, int]:
        if min_size != 0:
            message = f"a null pool has min_size 0, not {min_size!r}"
            raise ValueError(message)
        if max_size is not None and max_size < 0:
            message = f"max_size must be 0 (no limit) or more, not {max_size!r}"
            raise ValueError(message)
        return 0, max_size or 0

    def _reserve_locked(self) -> int:
        return 0  # requests open their own connections

    def _give_locked(self, entry: Entry, now: float) -> Any:  # noqa: ANN401 (psycopg2's connection)
        if self._waiting:
            return super()._give_locked(entry, now)
        self._out.pop(id(entry.conn), None)
        entry.state = GONE
        return entry.conn

    def getconn(self, timeout: float | None = None) -> Any:  # noqa: ANN401 (psycopg2's connection)
        """A new connection, or, with ``max_size`` open, the first one returned.

        :raises PoolTimeout: no connection within ``timeout``.
        :raises TooManyRequests: ``max_waiting`` requests are waiting already.
        :raises PoolClosed: the pool is closed.
        """
        if timeout is None:
            timeout = self.timeout
        lock = self._lock
        if lock is None:
            raise self._closed_error()
        with lock:
            if self._closed:
                raise self._closed_error()
            room = not self._max_size or self._size_locked() < self._max_size
            if room:
                self._opening += 1
                self._stats.requests_num += 1
        if not room:
            return super().getconn(timeout)
        try:
            entry = self._open_entry(bound=timeout)
        except BaseException:
            with lock:
                self._opening -= 1
                self._stats.requests_errors += 1
            raise
        with lock:
            self._opening -= 1
            closed = self._closed
            if not closed:
                entry.state = OUT
                self._out[id(entry.conn)] = entry
        if closed:
            _conn.close_quietly(entry.conn)
            raise self._closed_error()
        entry.since = monotonic()
        if self.close_returns:
            setattr(entry.conn, _conn.POOL_ATTRIBUTE, self)
        return entry.conn

    def wait(self, timeout: float = 30.0) -> None:
        """Open one connection and close it: a startup check of the settings.

        :raises PoolTimeout: it failed within ``timeout`` seconds; the pool is then closed.
        """
        if self._lock is None or self._closed:
            raise self._closed_error()
        try:
            entry = self._open_entry(bound=timeout)
        except Exception as exc:
            self.close()
            message = f"pool {self.name!r}: no connection could be opened: {exc}"
            raise PoolTimeout(message) from exc
        _conn.close_quietly(entry.conn)

    def check(self) -> None:
        """Nothing to check: the pool keeps no connection."""
