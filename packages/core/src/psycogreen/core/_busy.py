# SPDX-License-Identifier: BSD-3-Clause
"""The error for a connection used by a second greenlet while the first one's query is in flight."""

from __future__ import annotations

import psycopg2

from psycogreen.core._inflight import other_task

__all__ = ["ConnectionBusyError", "refuse"]


class ConnectionBusyError(psycopg2.ProgrammingError):
    """An operation on a connection while another greenlet's query on it is in flight.

    The other greenlet's operation is not affected. ``conn.cancel()`` is allowed meanwhile.

    .. versionadded:: 1.0
    """


def refuse(conn: object, operation: str) -> None:
    """Raise :class:`ConnectionBusyError` if another greenlet of this thread is using ``conn``."""
    task = other_task(conn)
    if task is None:
        return
    message = (
        f"{operation} cannot run now: another greenlet ({task!r}) is running an operation on "
        f"this connection, and psycopg2 would block the whole thread until it ends. A "
        f"psycopg2 connection serves one greenlet at a time: give each greenlet its own "
        f"connection (a pool), or serialise its use with a lock. conn.cancel() may interrupt "
        f"the running operation."
    )
    raise ConnectionBusyError(message)
