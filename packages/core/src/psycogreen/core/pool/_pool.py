# SPDX-License-Identifier: BSD-3-Clause
"""``ConnectionPool``: psycopg_pool's API over psycopg2, for any psycogreen backend.

This module holds the class users make, its ``with pool.connection()`` block, the return of a
connection and the maintenance calls; the request side is in ``_requests.py``, the background
work in ``_grow.py``, the state in ``_base.py``. A holder interrupted at any switch point
(killed, timed out, Ctrl-C) leaks neither a slot nor a connection: its connection is brought
back to idle, or discarded and replaced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from time import monotonic
from types import TracebackType
from typing import Any

from psycogreen.core._inflight import inflight
from psycogreen.core.pool import _conn
from psycogreen.core.pool._base import ConnectFailedCB, pools, run_callback
from psycogreen.core.pool._errors import PoolMisuseError, PoolTimeout
from psycogreen.core.pool._requests import RequestingPool
from psycogreen.core.pool._state import GONE, OUT, RETURNING, Entry

__all__ = ["ConnectionPool"]


class _Checkout:
    """``with pool.connection() as conn:``: commit on success, roll back on error, return.

    A class rather than a generator: it is the hot path, and a generator-based context
    manager costs a generator and two resumptions per use.
    """

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: ConnectionPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None  # as getconn()'s

    def __enter__(self) -> Any:  # noqa: ANN401 (psycopg2's connection)
        self._conn = conn = self._pool.getconn(self._timeout)
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # On error the rollback is putconn()'s, which discards the connection if it fails.
            if exc_type is None and conn.status != _conn.READY and not conn.closed:
                conn.commit()
        finally:
            self._pool.putconn(conn)


class ConnectionPool(RequestingPool):
    """A pool of psycopg2 connections that greenlets (or threads) share.

    The parameters are psycopg_pool's, with its defaults:

    :param conninfo: the connection string, or a function returning one (called at every
        connect).
    :param connection_class: psycopg2's ``connection_factory`` for the pool's connections.
    :param kwargs: more ``psycopg2.connect()`` arguments (``application_name``...), or a
        function returning them.
    :param min_size: the connections kept open.
    :param max_size: the most connections open at once, counting those being opened
        (``None``: ``min_size``).
    :param open: open the pool now (else :meth:`open` or ``with pool:``).
    :param configure: called with each new connection; it must leave it idle.
    :param check: called with a connection before it is handed out; if it raises, the
        connection is discarded and another one is tried (:meth:`check_connection` is one).
    :param reset: called with each returned connection, idle; it must leave it idle.
    :param name: the pool's name in logs and errors (``pool-1``, ``pool-2``... by default).
    :param close_returns: make ``conn.close()`` return a checked-out connection to the pool
        (for SQLAlchemy's ``NullPool``).
    :param timeout: the default seconds :meth:`getconn` waits for a connection.
    :param max_waiting: the most requests waiting at once (0: no limit); more raise
        :class:`TooManyRequests` at once.
    :param max_lifetime: seconds after which a connection is replaced (less up to 5 %).
    :param max_idle: seconds after which an idle connection above ``min_size`` is closed.
    :param reconnect_timeout: seconds of failed connects, retried with exponential backoff,
        after which ``reconnect_failed`` is called (and the attempts start again).
    :param reconnect_failed: called with the pool after ``reconnect_timeout``.
    :param num_workers: the most connects in progress at once.

    .. versionadded:: 1.1
    """

    def __init__(  # noqa: PLR0913 (psycopg_pool's constructor)
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        connection_class: Any = None,  # noqa: ANN401 (a psycopg2 connection class)
        kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        open: bool = True,  # noqa: A002 (psycopg_pool's name)
        configure: _conn.ConnectionCB | None = None,
        check: _conn.ConnectionCB | None = None,
        reset: _conn.ConnectionCB | None = None,
        name: str | None = None,
        close_returns: bool = False,
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
            configure=configure,
            check=check,
            reset=reset,
            name=name,
            close_returns=close_returns,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
            num_workers=num_workers,
        )
        if open:
            self.open()

    def __enter__(self) -> ConnectionPool:  # noqa: PYI034 (3.10 has no typing.Self)
        self.open()
        return self

    # -- requests --------------------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> _Checkout:
        """A connection for a ``with`` block: committed on success, rolled back on error.

        ``with pool.connection() as conn:`` waits up to ``timeout`` (the pool's by default)
        for a connection; at the end of the block the transaction is committed, or rolled
        back if the block raised, and the connection goes back to the pool.

        :raises PoolTimeout: no connection within ``timeout``.
        :raises TooManyRequests: ``max_waiting`` requests are waiting already.
        :raises PoolClosed: the pool is closed.
        """
        return _Checkout(self, timeout)

    def putconn(self, conn: Any) -> None:  # noqa: ANN401 (psycopg2's connection)
        """Give back a connection from :meth:`getconn`.

        It is rolled back if it is in a transaction, passed to ``reset``, and handed to the
        first waiting request or kept idle; a closed or broken one, one whose rollback
        fails, one past ``max_lifetime``, is closed and replaced.

        :raises PoolMisuseError: the connection is not checked out of this pool (returned
            twice, from another pool), or another greenlet's query on it is in flight.
        """
        lock = self._lock
        key = id(conn)
        # Read before the lock: whether it can go straight back, and whether it is in use.
        busy = inflight and _conn.busy_elsewhere(conn) is not None
        clean = not conn.closed and conn.get_transaction_status() == _conn.IDLE
        now = monotonic()
        close = None
        with lock if lock is not None else _NO_LOCK:
            entry = self._out.get(key)
            if entry is None or entry.conn is not conn or entry.state != OUT:
                entry = None
            elif not busy:
                self._stats.usage_ms += now - entry.since
                if self.close_returns:
                    setattr(conn, _conn.POOL_ATTRIBUTE, None)
                if (
                    clean
                    and self._reset is None
                    and entry.expires > now
                    and entry.generation == self._generation
                    and not self._closed
                ):
                    close = self._give_locked(entry, now)
                    if close is None:
                        return
                    entry = None
                else:
                    entry.state = RETURNING
        if close is not None:
            _conn.close_quietly(close)  # resize() made the pool smaller
            return
        if entry is None:
            raise self._misuse(conn)
        if busy:
            message = (
                f"a connection of the pool {self.name!r} is returned while another greenlet's "
                "operation on it is in flight: return it from the greenlet that uses it, "
                "once that operation is done"
            )
            raise PoolMisuseError(message)
        self._return_slow(entry, now)

    def _return_slow(self, entry: Entry, now: float) -> None:
        conn = entry.conn
        if conn.closed or conn.get_transaction_status() not in _REUSABLE:
            self._stats.returns_bad += 1
            self._discard(entry, "closed" if conn.closed else "in_transaction")
            return
        if self._closed or entry.expires <= now or entry.generation != self._generation:
            self._discard(entry, "pool_closed" if self._closed else "expired")
            return
        backend = self._backend
        assert backend is not None
        if backend.spawn is not None and not backend.can_switch() and backend.has_hub():
            # Returned from the hub (a finalizer the collector ran there): a rollback cannot
            # wait here, so a task of the scheduler does it.
            backend.spawn(functools.partial(self._finish_return, entry))
            return
        self._finish_return(entry)

    def _finish_return(self, entry: Entry) -> None:
        """Bring a returned connection back to idle (may wait), then hand it on or discard it."""
        conn = entry.conn
        try:
            if conn.get_transaction_status() != _conn.IDLE:
                conn.rollback()
            if self._reset is not None:
                run_callback("reset", self._reset, conn)
        except Exception as exc:  # noqa: BLE001 (any failure: the connection is not reused)
            _conn.logger.warning("pool %r: discarding a returned connection: %s", self.name, exc)
            self._stats.returns_bad += 1
            self._discard(entry, "reset_failed")
            return
        except BaseException:
            self._discard(entry, "reset_failed")  # interrupted mid-rollback: state unknown
            raise
        self._give(entry)

    def _misuse(self, conn: object) -> PoolMisuseError:
        for entry in self._idle:
            if entry.conn is conn:
                return PoolMisuseError(
                    f"this connection is already back in the pool {self.name!r}: a "
                    "connection is returned once per checkout"
                )
        owner = next((pool for pool in pools if pool._holds(conn)), None)  # noqa: SLF001
        where = (
            f"it is checked out of the pool {owner.name!r}"
            if owner is not None
            else "nor of any other pool"
        )
        return PoolMisuseError(
            f"this connection is not checked out of the pool {self.name!r} ({where}): return "
            "a connection to the pool it came from, once"
        )

    # -- maintenance -----------------------------------------------------------------------

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are open (a startup check).

        :raises PoolTimeout: not within ``timeout`` seconds; the pool is then closed.
        :raises PoolClosed: the pool is closed.
        """
        if self._lock is None:
            raise self._closed_error()
        if not self._wait_full(timeout):
            self.close()
            message = f"pool {self.name!r} initialization incomplete after {timeout} s"
            raise PoolTimeout(message)

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change ``min_size`` and ``max_size`` now; extra connections close as they come back."""
        min_size, max_size = self._check_size(min_size, max_size)
        lock = self._lock
        with lock if lock is not None else _NO_LOCK:
            self._min_size = min_size
            self._max_size = max_size
            if lock is None or self._closed:
                return
            extra = self._size_locked() - max_size
            drop = self._idle[:extra] if extra > 0 else []
            del self._idle[: len(drop)]
            for entry in drop:
                entry.state = GONE
            wanted = self._reserve_locked()
        for entry in drop:
            _conn.close_quietly(entry.conn)
        self._start_connectors(wanted)

    def drain(self) -> None:
        """Replace every connection: idle ones now, handed-out ones when they come back."""
        with self._lock if self._lock is not None else _NO_LOCK:
            self._generation += 1
        self._sweep(monotonic())

    def check(self) -> None:
        """Check each idle connection now; discard and replace the broken and expired ones."""
        lock = self._lock
        if lock is None:
            return
        with lock:
            if self._closed:
                return
            entries, self._idle = self._idle, []
            for entry in entries:
                entry.state = OUT
                self._out[id(entry.conn)] = entry
        pending = list(reversed(entries))
        try:
            while pending:
                entry = pending.pop()
                now = monotonic()
                if entry.expires <= now or entry.generation != self._generation:
                    self._discard(entry, "expired")
                    continue
                try:
                    self.check_connection(entry.conn)
                except Exception as exc:  # noqa: BLE001 (any failure: replaced)
                    _conn.logger.warning(
                        "pool %r: discarding a broken connection: %s", self.name, exc
                    )
                    self._stats.connections_lost += 1
                    self._discard(entry)
                    continue
                except BaseException:
                    self._discard(entry)
                    raise
                self._give(entry)
        finally:
            for entry in pending:  # interrupted: the others go back unchecked
                self._give(entry)

    #: A ready ``check`` callback: a trivial query outside any transaction.
    check_connection = staticmethod(_conn.check_connection)


class _NoLock:
    """Stands in for the lock of a pool never opened (nothing else can touch its state)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
_REUSABLE = (_conn.IDLE, _conn.INTRANS, _conn.INERROR)
