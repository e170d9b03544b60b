# SPDX-License-Identifier: BSD-3-Clause
"""Guarded connections and cursors: a clear error, not a frozen process, when greenlets share one.

While psycopg2 waits in the callback it holds the connection's mutex (``conn->lock``;
``pqpath.c``: ``pq_commit``, ``pq_abort``, ``pq_reset``, ``_pq_execute_sync``;
``connection_int.c``: ``conn_close``, ``conn_set_session``, ``conn_set_client_encoding``,
``conn_tpc_*``). Another greenlet of the same OS thread that calls one of those methods blocks
in ``pthread_mutex_lock`` with the GIL released, and the hub can never run again: the process
freezes, and neither a timeout nor Ctrl-C ends it. ``execute()`` does not freeze but fails with
"execute cannot be used while an asynchronous query is underway", which names the wrong cause.

The classes here check, before psycopg2 takes the mutex, whether the wait callback is driving
the connection for another greenlet of this thread (``_poll.inflight``), and raise
:class:`ConnectionBusyError` if so. Another OS thread is left alone: psycopg2's mutex
serialises threads correctly, blocking only the waiting thread.

They sit directly above psycopg2's own classes in the method resolution order, also when
combined with a user's ``connection_factory`` or ``cursor_factory``: the user's overrides run
first, and the check runs just before psycopg2's C method.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from psycogreen.core import _cancel, _copy_execute, _dsn, _libpq, _lobject, _waits
from psycogreen.core._busy import ConnectionBusyError, refuse
from psycogreen.core._copy import CopyCursorMixin
from psycogreen.core._detect import installed_backend
from psycogreen.core._inflight import inflight
from psycogreen.core._types import WaitFunc

__all__ = [
    "ConnectionBusyError",
    "GuardedConnection",
    "GuardedCursor",
    "GuardedNamedCursor",
    "guarded_connection_class",
    "guarded_cursor_class",
]

_Connection = psycopg2.extensions.connection
_Cursor = psycopg2.extensions.cursor
# psycopg2's own descriptors of the session attributes, which the properties below extend
# (Any: C getset descriptors, which the stubs do not describe).
_AUTOCOMMIT: Any = _Connection.__dict__["autocommit"]
_ISOLATION_LEVEL: Any = _Connection.__dict__["isolation_level"]
_READONLY: Any = _Connection.__dict__["readonly"]
_DEFERRABLE: Any = _Connection.__dict__["deferrable"]
_DSN: Any = _Connection.__dict__["dsn"]
# psycopg2 cancels only a connection that is up (connection_type.c: psyco_conn_cancel).
_CANCELLABLE = (psycopg2.extensions.STATUS_READY, psycopg2.extensions.STATUS_BEGIN)


def _cancel_waits() -> tuple[WaitFunc, WaitFunc] | None:
    """The waits a cancel request goes through: those of the installed psycogreen callback.

    ``None`` (psycopg2's own ``cancel()``) without a wait callback, under one psycogreen does
    not know, under a backend whose waits work only in a narrower context than any code that
    may cancel (uWSGI's requests), and where the scheduler cannot switch (a signal handler
    the hub happens to run), which cannot wait on itself: psycopg2's cancel blocks for the
    round trip there, but it works.
    """
    record, _name, _callback = installed_backend()
    if record is None or not record.cancel_waits:
        return None
    if record.can_switch():
        return record.wait_read, record.wait_write
    if not record.has_hub():  # a thread without a scheduler: block this thread only
        return _waits.wait_read, _waits.wait_write
    return None


class GuardedConnection(_Connection):
    """A psycopg2 connection that refuses cross-greenlet use instead of freezing the process.

    ``psycopg2.connect()`` returns one (or a subclass of the user's ``connection_factory``
    with this class mixed in) once psycogreen has patched psycopg2. Its cursors are guarded
    likewise (:class:`GuardedCursor`). Everything else is psycopg2's connection.

    .. versionadded:: 1.0
    """

    # Each override checks before psycopg2 takes the connection's mutex. The ``if inflight``
    # keeps the common case (no query in flight anywhere) to one truth test.

    def commit(self) -> None:
        """psycopg2's ``commit()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "commit()")
        _Connection.commit(self)

    def rollback(self) -> None:
        """psycopg2's ``rollback()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "rollback()")
        _Connection.rollback(self)

    def close(self) -> None:
        """psycopg2's ``close()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "close()")
        _Connection.close(self)

    def cancel(self) -> None:
        """psycopg2's ``cancel()``, sent without blocking the scheduler.

        psycopg2's own calls ``PQcancel()`` holding the GIL: a round trip to the server during
        which no greenlet runs, for minutes if the server is unreachable
        (``connection_type.c: psyco_conn_cancel``). Under psycogreen's gevent, eventlet or
        scheduler-free callback the request is sent by core instead, through the scheduler,
        bounded by :func:`~psycogreen.core.set_cancel_timeout`. Allowed while another
        greenlet's operation is in flight: it is how that operation is stopped.

        :raises psycopg2.OperationalError: the request could not be sent, or the server did
            not take it within the cancel timeout.
        """
        waits = _cancel_waits()
        lib = _libpq.load() if waits is not None else None
        if (
            waits is None
            or lib is None
            or self.closed
            or self.status not in _CANCELLABLE  # prepared, or still connecting
            or _libpq.pgconn(self, lib) is None
        ):
            _Connection.cancel(self)  # psycopg2's own, with its checks and messages
            return
        bound = _cancel.cancel_timeout()
        if not _cancel.cancel(self, *waits, bound):
            message = (
                "psycogreen: the cancel request failed or the server did not take it within "
                f"{bound:g} s"
            )
            raise psycopg2.OperationalError(message)

    @property
    def dsn(self) -> str:
        """psycopg2's ``dsn`` of the connection string given to ``connect()``.

        psycogreen connects with one-address strings (``_connect_hosts``), which psycopg2's
        own attribute would report: the host that answered, its address, and the options in
        another order. This is what psycopg2 reports for the string and keyword arguments the
        program passed: a program that reconnects with ``connect(conn.dsn)`` keeps every host.
        """
        given: str | None = self.__dict__.get(_dsn.KEY)
        return str(_DSN.__get__(self)) if given is None else given

    def __repr__(self) -> str:
        """psycopg2's repr, with the ``dsn`` above (``connection_type.c``: connection_repr)."""
        return f"<connection object at {id(self):#x}; dsn: '{self.dsn}', closed: {self.closed}>"

    def lobject(
        self,
        oid: int = 0,
        mode: str | None = "",
        new_oid: int = 0,
        new_file: str | None = None,
        lobject_factory: Any = None,  # noqa: ANN401 (a class or any callable, as psycopg2's)
    ) -> Any:  # noqa: ANN401 (the factory's type)
        """psycopg2's ``lobject()``; under a wait callback, one that waits through it.

        psycopg2 refuses large objects under a wait callback (libpq's large-object calls
        block). Then the large object goes through the server's large-object functions in
        ordinary queries (:mod:`psycogreen.core._lobject`), with psycopg2's API, modes and
        errors.
        """
        return _lobject.lobject(self, oid, mode, new_oid, new_file, lobject_factory)

    def reset(self) -> None:
        """psycopg2's ``reset()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "reset()")
        _Connection.reset(self)

    def set_session(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (psycopg2's)
        """psycopg2's ``set_session()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "set_session()")
        _Connection.set_session(self, *args, **kwargs)

    def set_isolation_level(self, level: Any) -> None:  # noqa: ANN401 (psycopg2's signature)
        """psycopg2's ``set_isolation_level()``, refused while another greenlet uses it."""
        if inflight:
            refuse(self, "set_isolation_level()")
        _Connection.set_isolation_level(self, level)

    def set_client_encoding(self, encoding: str) -> None:
        """psycopg2's ``set_client_encoding()``, refused while another greenlet uses it."""
        if inflight:
            refuse(self, "set_client_encoding()")
        _Connection.set_client_encoding(self, encoding)

    def tpc_begin(self, xid: Any) -> None:  # noqa: ANN401 (psycopg2's signature)
        """psycopg2's ``tpc_begin()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "tpc_begin()")
        _Connection.tpc_begin(self, xid)

    def tpc_prepare(self) -> None:
        """psycopg2's ``tpc_prepare()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "tpc_prepare()")
        _Connection.tpc_prepare(self)

    def tpc_commit(self, *args: Any) -> None:  # noqa: ANN401 (psycopg2's signature)
        """psycopg2's ``tpc_commit()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "tpc_commit()")
        _Connection.tpc_commit(self, *args)

    def tpc_rollback(self, *args: Any) -> None:  # noqa: ANN401 (psycopg2's signature)
        """psycopg2's ``tpc_rollback()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "tpc_rollback()")
        _Connection.tpc_rollback(self, *args)

    def tpc_recover(self) -> Any:  # noqa: ANN401 (psycopg2's signature)
        """psycopg2's ``tpc_recover()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self, "tpc_recover()")
        return _Connection.tpc_recover(self)

    # The session attributes' setters go through conn_set_session (the mutex) as well.

    @property
    def autocommit(self) -> Any:  # noqa: ANN401 (psycopg2's attribute)
        """psycopg2's ``autocommit``; setting it is refused while another greenlet uses it."""
        return _AUTOCOMMIT.__get__(self)

    @autocommit.setter
    def autocommit(self, value: Any) -> None:  # noqa: ANN401 (psycopg2 checks it)
        if inflight:
            refuse(self, "setting autocommit")
        _AUTOCOMMIT.__set__(self, value)

    @property
    def isolation_level(self) -> Any:  # noqa: ANN401 (psycopg2's attribute)
        """psycopg2's ``isolation_level``; setting it is refused while another greenlet uses it."""
        return _ISOLATION_LEVEL.__get__(self)

    @isolation_level.setter
    def isolation_level(self, value: Any) -> None:  # noqa: ANN401 (psycopg2 checks it)
        if inflight:
            refuse(self, "setting isolation_level")
        _ISOLATION_LEVEL.__set__(self, value)

    @property
    def readonly(self) -> Any:  # noqa: ANN401 (psycopg2's attribute)
        """psycopg2's ``readonly``; setting it is refused while another greenlet uses it."""
        return _READONLY.__get__(self)

    @readonly.setter
    def readonly(self, value: Any) -> None:  # noqa: ANN401 (psycopg2 checks it)
        if inflight:
            refuse(self, "setting readonly")
        _READONLY.__set__(self, value)

    @property
    def deferrable(self) -> Any:  # noqa: ANN401 (psycopg2's attribute)
        """psycopg2's ``deferrable``; setting it is refused while another greenlet uses it."""
        return _DEFERRABLE.__get__(self)

    @deferrable.setter
    def deferrable(self, value: Any) -> None:  # noqa: ANN401 (psycopg2 checks it)
        if inflight:
            refuse(self, "setting deferrable")
        _DEFERRABLE.__set__(self, value)

    def cursor(
        self,
        name: str | bytes | None = None,
        cursor_factory: Any = None,  # noqa: ANN401 (any callable psycopg2 accepts)
        withhold: bool = False,  # noqa: FBT001, FBT002 (psycopg2's signature)
        scrollable: bool | None = None,  # noqa: FBT001 (psycopg2's signature)
    ) -> Any:  # noqa: ANN401 (the factory's type)
        """psycopg2's ``cursor()``; the cursor's class is the factory's, guarded."""
        factory = cursor_factory or getattr(self, "cursor_factory", None) or _Cursor
        cls = (_UNNAMED if name is None else _NAMED).get(factory)
        if cls is None:
            cls = guarded_cursor_class(factory, named=name is not None)
        return _Connection.cursor(self, name, cls, withhold, scrollable)


class GuardedCursor(CopyCursorMixin, _Cursor):
    """A psycopg2 cursor whose statements are refused while another greenlet uses the connection.

    .. versionadded:: 1.0
    """

    # The arguments are psycopg2's to check: a str, bytes or Composable query, any adaptable
    # parameters.
    def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002, ANN401 (psycopg2's)
        """psycopg2's ``execute()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "execute()")
        _Cursor.execute(self, query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:  # noqa: ANN401 (psycopg2's)
        """psycopg2's ``executemany()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "executemany()")
        _Cursor.executemany(self, query, vars_list)

    def callproc(self, procname: Any, parameters: Any = None) -> Any:  # noqa: ANN401 (psycopg2's)
        """psycopg2's ``callproc()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "callproc()")
        if parameters is None:
            return _Cursor.callproc(self, procname)
        return _Cursor.callproc(self, procname, parameters)


class GuardedNamedCursor(GuardedCursor):
    """A server-side (named) cursor: its fetches and ``close()`` talk to the server too.

    .. versionadded:: 1.0
    """

    def fetchone(self) -> Any:  # noqa: ANN401 (the row type is the factory's)
        """psycopg2's ``fetchone()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "fetchone()")
        return _Cursor.fetchone(self)

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 (the factory's rows)
        """psycopg2's ``fetchmany()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "fetchmany()")
        return _Cursor.fetchmany(self, *args, **kwargs)

    def fetchall(self) -> Any:  # noqa: ANN401 (the row type is the factory's)
        """psycopg2's ``fetchall()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "fetchall()")
        return _Cursor.fetchall(self)

    def scroll(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (psycopg2's)
        """psycopg2's ``scroll()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "scroll()")
        _Cursor.scroll(self, *args, **kwargs)

    def close(self) -> None:
        """psycopg2's ``close()``, refused while another greenlet uses the connection."""
        if inflight:
            refuse(self.connection, "close()")
        _Cursor.close(self)

    def __next__(self) -> Any:  # noqa: ANN401 (the row type is the factory's)
        """The next row; a FETCH of ``itersize`` rows when the buffer is empty."""
        if inflight:
            refuse(self.connection, "iterating a named cursor")
        return _Cursor.__next__(self)


_GUARDS = (GuardedConnection, GuardedCursor, GuardedNamedCursor)
# guard -> {factory: guarded class}; cursor() looks its two up directly (one call per cursor)
_classes: dict[type, dict[object, Any]] = {guard: {} for guard in _GUARDS}  # Any: as _mix
_UNNAMED = _classes[GuardedCursor]
_NAMED = _classes[GuardedNamedCursor]


def _mix(factory: Any, guard: type) -> Any:  # noqa: ANN401 (a class, or a callable as given)
    """``factory`` with ``guard`` mixed in right above psycopg2's class.

    ``factory`` is returned as is when that is impossible (not a subclass of psycopg2's
    class: a function, say).
    """
    cache = _classes[guard]
    cls = cache.get(factory)
    if cls is not None:
        return cls
    base = guard.__mro__[-2]  # psycopg2's own class, just before object
    if not isinstance(factory, type) or not issubclass(factory, base):
        cls = factory
    elif factory is base:
        cls = guard
    elif issubclass(factory, guard):
        cls = factory
    elif factory in _GUARDS:  # a weaker guard (GuardedCursor for a named cursor)
        cls = guard
    else:
        # (factory, guard): C3 puts guard after every class of factory's hierarchy except
        # psycopg2's own, which guard derives from: the user's overrides run first.
        namespace = {
            "__module__": factory.__module__,
            "__qualname__": factory.__qualname__,
            "__doc__": factory.__doc__,
        }
        try:
            cls = type(factory.__name__, (factory, guard), namespace)
        except TypeError:  # an incompatible layout (another C subclass): leave it unguarded
            cls = factory
    cache[factory] = cls
    return cls


def guarded_connection_class(factory: Any = None) -> Any:  # noqa: ANN401 (any factory psycopg2 takes)
    """``factory`` (a connection class; psycopg2's by default) with the guard mixed in.

    A ``connection_factory`` that is not a class derived from psycopg2's connection (any
    callable psycopg2 accepts) is returned unchanged: its connections are not guarded.

    .. versionadded:: 1.0
    """
    return _mix(_Connection if factory is None else factory, GuardedConnection)


def guarded_cursor_class(
    factory: Any = None,  # noqa: ANN401 (any factory psycopg2 takes)
    *,
    named: bool = False,
) -> Any:  # noqa: ANN401 (the factory's class, guarded)
    """``factory`` (a cursor class; psycopg2's by default) with the guard mixed in.

    :param named: the guard for a server-side cursor, whose fetches talk to the server.

    .. versionadded:: 1.0
    """
    guard = GuardedNamedCursor if named else GuardedCursor
    return _mix(_Cursor if factory is None else factory, guard)


# COPY on a guarded connection goes through psycopg2's execute() (_copy_execute).
_copy_execute.guarded = (GuardedConnection,)
