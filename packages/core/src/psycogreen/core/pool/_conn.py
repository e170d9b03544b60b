# SPDX-License-Identifier: BSD-3-Clause
"""What the pool does to psycopg2 connections: open, check, bring back to idle, close.

Everything that talks to psycopg2 is here; the pool's bookkeeping knows connections only as
objects with these operations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import psycopg2
import psycopg2.extensions

from psycogreen.core._inflight import current_task, inflight

__all__ = [
    "IDLE",
    "INERROR",
    "INTRANS",
    "READY",
    "ConnectionCB",
    "busy_elsewhere",
    "check_connection",
    "close_quietly",
    "open_connection",
    "returning_class",
]

logger = logging.getLogger("psycogreen.pool")

#: A callback taking a connection: ``configure``, ``check``, ``reset``. Any: it takes the
#: connections of the pool's ``connection_factory``, the user's class.
ConnectionCB = Callable[[Any], None]

# psycopg2.extensions.TRANSACTION_STATUS_* (libpq's PGTransactionStatusType) and STATUS_READY,
# as ints for the return path's comparisons.
IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
INTRANS = psycopg2.extensions.TRANSACTION_STATUS_INTRANS
INERROR = psycopg2.extensions.TRANSACTION_STATUS_INERROR
READY = psycopg2.extensions.STATUS_READY

#: The attribute through which a connection of a ``close_returns`` pool finds its pool.
POOL_ATTRIBUTE = "_psycogreen_pool"


def open_connection(
    conninfo: str | Callable[[], str],
    kwargs: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
    factory: Any,  # noqa: ANN401 (a psycopg2 connection class, or None for psycopg2's)
) -> Any:  # noqa: ANN401 (psycopg2's connection is untyped at this level)
    """A new connection, made by ``psycopg2.connect`` as the program has it now.

    The function is looked up at each call: once psycogreen patched psycopg2 it is
    psycogreen's, whose connections are guarded and whose connect never blocks the scheduler.
    """
    dsn = conninfo() if callable(conninfo) else conninfo
    params = dict(kwargs() if callable(kwargs) else (kwargs or {}))
    if factory is not None:
        params["connection_factory"] = factory
    return psycopg2.connect(dsn, **params)


def check_connection(conn: Any) -> None:  # noqa: ANN401 (psycopg2's connection)
    """Raise unless ``conn`` answers a trivial query: the ready ``check`` callback.

    The query runs outside any transaction, so the connection is left as it was.

    :raises psycopg2.Error: the connection is broken or closed.
    """
    if conn.closed:
        message = "the connection is closed"
        raise psycopg2.OperationalError(message)
    autocommit = conn.autocommit
    if not autocommit:
        conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        if not autocommit and not conn.closed:
            conn.autocommit = False


def busy_elsewhere(conn: object) -> object | None:
    """The other task whose operation on ``conn`` is in flight now, or ``None``."""
    task = inflight.get(id(conn))
    if task is None or task is current_task():
        return None
    return task


def close_quietly(conn: Any) -> None:  # noqa: ANN401 (psycopg2's connection)
    """Close ``conn``; a failure is logged, never raised (the connection is being dropped).

    ``close()`` sends libpq's Terminate message without waiting for an answer: it is no
    switch point, so the pool's bookkeeping around it cannot be interrupted.
    """
    if conn.closed:
        return
    if POOL_ATTRIBUTE in getattr(conn, "__dict__", ()):
        setattr(conn, POOL_ATTRIBUTE, None)
    try:
        conn.close()
    except Exception as exc:  # noqa: BLE001 (a connection being dropped: nothing to do but say so)
        logger.warning("closing a discarded connection failed: %s: %s", type(exc).__name__, exc)


# factory -> its returning class (Any: classes made with type(), see below)
_returning: dict[type, Any] = {}


def returning_class(factory: Any) -> Any:  # noqa: ANN401 (a psycopg2 connection class)
    """``factory`` (psycopg2's connection by default) whose ``close()`` returns it to its pool.

    A connection checked out of a pool made with ``close_returns=True`` goes back to it on
    ``close()`` (SQLAlchemy's ``NullPool`` closes the connections it is done with); any other
    one closes.
    """
    base = psycopg2.extensions.connection if factory is None else factory
    cached = _returning.get(base)
    if cached is not None:
        return cached

    def close(self: Any) -> None:  # noqa: ANN401 (an instance of the class made below)
        pool = self.__dict__.get(POOL_ATTRIBUTE)
        if pool is not None:
            pool.putconn(self)
        else:
            # super(): the guard, mixed in below this class once psycopg2 is patched, runs too.
            super(cls, self).close()

    cls: Any = type(  # Any: a class made at run time from the factory's
        base.__name__, (base,), {"close": close, "__module__": base.__module__}
    )
    _returning[base] = cls
    return cls
