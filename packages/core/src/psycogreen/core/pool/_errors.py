# SPDX-License-Identifier: BSD-3-Clause
"""The pool's exceptions: why a connection could not be had, and misuse of the pool.

The first three are ``psycopg2.OperationalError`` (as psycopg_pool's are psycopg's), so code
that already retries on operational errors keeps working; misuse is a programming error.
"""

from __future__ import annotations

import psycopg2

__all__ = ["PoolClosed", "PoolError", "PoolMisuseError", "PoolTimeout", "TooManyRequests"]


class PoolError(psycopg2.OperationalError):
    """The pool could not hand out a connection (the base of the three below).

    .. versionadded:: 1.1
    """


class PoolTimeout(PoolError):  # noqa: N818 (psycopg_pool's name)
    """No connection became free, and none could be opened, within the request's timeout.

    .. versionadded:: 1.1
    """


class TooManyRequests(PoolError):  # noqa: N818 (psycopg_pool's name)
    """The queue of waiting requests already holds ``max_waiting`` requests.

    .. versionadded:: 1.1
    """


class PoolClosed(PoolError):  # noqa: N818 (psycopg_pool's name)
    """The pool is not open yet, or it has been closed.

    .. versionadded:: 1.1
    """


class PoolMisuseError(psycopg2.ProgrammingError):
    """A connection returned twice, to a pool it does not come from, or while in use.

    .. versionadded:: 1.1
    """
