# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen's ``connect()``: psycopg2's, returning guarded connections.

Patching psycopg2 (:func:`psycogreen.core.patch`) puts :func:`connect` in place of the module
attribute ``psycopg2.connect``, and unpatching puts the previous one back. Django and
SQLAlchemy look the attribute up on every connect (``Database.connect(...)``,
``dbapi.connect(...)``), so their connections are guarded too. A ``from psycopg2 import
connect`` executed before patching keeps the unguarded function.

Making the connection itself happens in one place, :func:`raw_connect`, which the connect
options of other modules (timeouts, host handling) wrap.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psycopg2

from psycogreen.core._connect_hosts import connect_with
from psycogreen.core._guard import guarded_connection_class
from psycogreen.core._timeout import UNSET, block_timeout, set_timeout, timeout

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["connect", "install", "installed", "raw_connect", "uninstall"]

#: The ``psycopg2.connect`` that :func:`install` replaced (psycopg2's own, or another
#: library's wrapper of it), or ``None`` when not installed.
_replaced: Callable[..., Any] | None = None  # Any: as psycopg2.connect's stub
_lock = threading.Lock()


def raw_connect(dsn: str | None, **kwargs: Any) -> Any:  # noqa: ANN401 (the factory's type)
    """Open a connection the way ``psycopg2.connect`` does: the one place psycogreen makes one.

    ``kwargs`` are ``psycopg2.connect``'s (``connection_factory`` already guarded).
    """
    target = _replaced if _replaced is not None else psycopg2.connect
    # Host by host, each attempt bounded by connect_timeout, names resolved without blocking.
    return connect_with(target, dsn, **kwargs)


def connect(
    dsn: str | None = None,
    connection_factory: Any = None,  # noqa: ANN401 (any callable psycopg2 accepts)
    cursor_factory: Any = None,  # noqa: ANN401 (any callable psycopg2 accepts)
    **kwargs: Any,  # noqa: ANN401 (libpq's parameters)
) -> Any:  # noqa: ANN401 (the factory's type)
    """``psycopg2.connect()``, returning a guarded connection.

    The connection's class is ``connection_factory`` (psycopg2's connection by default) with
    :class:`~psycogreen.core.GuardedConnection` mixed in: another greenlet's ``commit()``,
    ``close()``, ``execute()``... while a query runs get
    :class:`~psycogreen.core.ConnectionBusyError` instead of freezing the process. Cursors
    are guarded the same way, whatever their ``cursor_factory``.

    :param psycogreen_timeout: a deadline in seconds for every operation on the connection,
        its connect included (see :func:`psycogreen.core.set_timeout`). It is psycogreen's
        option: it is not passed to libpq. Django takes it in ``OPTIONS``, SQLAlchemy in
        ``connect_args``.

    Any other argument is ``psycopg2.connect()``'s.

    .. versionadded:: 1.0
    """
    seconds = kwargs.pop("psycogreen_timeout", None)
    if seconds is not None:
        seconds = float(seconds)
    factory = guarded_connection_class(connection_factory)
    if seconds is not None and block_timeout() == UNSET:
        with timeout(seconds):
            conn = raw_connect(
                dsn, connection_factory=factory, cursor_factory=cursor_factory, **kwargs
            )
    else:
        conn = raw_connect(dsn, connection_factory=factory, cursor_factory=cursor_factory, **kwargs)
    if seconds is not None:
        set_timeout(conn, seconds)
    return conn


def install() -> None:
    """Make ``psycopg2.connect`` psycogreen's :func:`connect` (a no-op if it is already)."""
    global _replaced  # noqa: PLW0603 (one process-wide module attribute, like the callback)
    with _lock:
        if psycopg2.connect is connect:
            return
        _replaced = psycopg2.connect
        psycopg2.connect = connect


def uninstall() -> None:
    """Put back the ``psycopg2.connect`` that :func:`install` replaced.

    If other code has wrapped psycogreen's function since, it is left in place (removing it
    would drop that code's wrapper); :func:`connect` then keeps working through it.
    """
    global _replaced  # noqa: PLW0603
    with _lock:
        if _replaced is None:
            return
        if psycopg2.connect is connect:
            psycopg2.connect = _replaced
            _replaced = None


def installed() -> bool:
    """Whether ``psycopg2.connect`` is psycogreen's :func:`connect`."""
    return psycopg2.connect is connect
