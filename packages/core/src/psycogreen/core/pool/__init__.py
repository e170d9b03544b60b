# SPDX-License-Identifier: BSD-3-Clause
"""A connection pool for psycopg2 under any psycogreen backend: psycopg_pool's API.

The pool waits and wakes through the backend of psycopg2's installed wait callback
(:func:`psycogreen.core.backend.current_backend`): gevent's or eventlet's greenlets, uWSGI's
async requests, or native threads without a scheduler. It imports no scheduler::

    from psycogreen.core.pool import ConnectionPool

    pool = ConnectionPool("dbname=app", min_size=2, max_size=10)
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")

See ``docs/pool.md`` for the settings and what happens on each failure.

.. versionadded:: 1.1
"""

from __future__ import annotations

from psycogreen.core.pool._errors import (
    PoolClosed,
    PoolError,
    PoolMisuseError,
    PoolTimeout,
    TooManyRequests,
)
from psycogreen.core.pool._null import NullConnectionPool
from psycogreen.core.pool._pool import ConnectionPool

__all__ = [
    "ConnectionPool",
    "NullConnectionPool",
    "PoolClosed",
    "PoolError",
    "PoolMisuseError",
    "PoolTimeout",
    "TooManyRequests",
]
