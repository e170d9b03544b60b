# SPDX-License-Identifier: BSD-3-Clause
"""COPY FROM STDIN / TO STDOUT that waits through the scheduler, like every other query.

psycopg2 refuses ``copy_expert()``, ``copy_from()`` and ``copy_to()`` as soon as any wait
callback is installed (``EXC_IF_GREEN`` in its ``cursor_type.c``): its COPY loops call libpq in
blocking mode. Here the COPY protocol is driven on psycopg2's own ``PGconn`` through the libpq
psycopg2 is linked against (``_libpq``), in libpq's non-blocking mode, waiting with the
installed backend's ``wait_read``/``wait_write``:

Under psycogreen's own wait callback psycopg2 itself runs the COPY statement with its
``execute()``: it sends ``BEGIN`` as for any statement, and once the statement is in COPY state
the callback moves the data inside psycopg2's wait (``_copy_execute``) and lets psycopg2 read
the final result. ``cursor.rowcount``, ``cursor.query`` and the exceptions, diagnostics
included, are then psycopg2's own. Under another project's callback for a known scheduler
(eventlet's own), the whole COPY runs here:

1. With autocommit off and no transaction open, psycopg2 runs a statement first, so that *it*
   sends ``BEGIN`` (with the ``set_session`` options) and knows a transaction is open:
   ``commit()``/``rollback()`` then cover the COPY. A ``BEGIN`` sent behind psycopg2's back
   would leave it believing none is, and turn ``commit()``/``rollback()`` into no-ops.
2. ``PQsendQuery``, ``PQflush``; wait for the first result: ``PGRES_COPY_IN`` or ``_OUT``.
3. COPY FROM: ``PQputCopyData`` per chunk read, ``PQflush`` every few hundred KiB (it waits
   for the socket; libpq reads pending input on every flush, so server notices cannot
   deadlock the two ends), ``PQputCopyEnd``. COPY TO: ``PQgetlineAsync`` (else
   ``PQgetCopyData(async=1)``) per row; each time libpq's buffer runs dry, the rows are
   written to the sink in one ``write()`` and more input is read (``PQconsumeInput``),
   waiting only when none has arrived.
4. ``PQgetResult`` until NULL: the server's error, or the row count from ``PQcmdTuples``.

A local server is fast enough that the socket never makes anyone wait, so the loops also yield
to the scheduler every few milliseconds. A ``close()`` from another task frees the ``PGconn``
(a use after free would crash the process): the connection is re-checked after every switch,
and every wait is bounded by a short slice. The waits watch a duplicate of the socket, which a
``close()`` cannot invalidate under the scheduler's feet.

An exception from the source's ``read()`` ends a COPY FROM as psycopg2's does
(``pqpath.c``: ``_pq_copy_in_v3``): with ``CopyFail`` and the message ``error in .read() call:
<type> <message>``, so that the server's ``QueryCanceled`` is raised (the exception from
``read()`` as its ``__cause__``). An interruption (the scheduler's timeout, a kill, an
exception from the sink, the psycogreen :func:`~psycogreen.core.timeout`) aborts the COPY on
the server before propagating: core's
non-blocking cancel request stops the statement, a COPY FROM is then ended with ``CopyFail``
(``PQputCopyEnd`` with a message: the server rolls the statement back), the remaining rows of
a COPY TO are discarded. If that cleanup cannot finish within the cancel timeout, the
connection is closed: it is never left half-way through a COPY.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import QuotedString, quote_ident

from psycogreen.core import _copy_execute, _libpq
from psycogreen.core._backend import waits_here
from psycogreen.core._busy import refuse
from psycogreen.core._copy_errors import CopyUnavailableError
from psycogreen.core._copy_loop import Copy, codec, copy_timeout
from psycogreen.core._detect import installed_backend
from psycogreen.core._inflight import current_task, inflight
from psycogreen.core._libpq import CopyLibPQError
from psycogreen.core._types import WaitFunc

_Cursor = psycopg2.extensions.cursor
_Connection = psycopg2.extensions.connection
# psycopg2's own COPY methods, for when no wait callback is installed: they get the caller's
# arguments as given, and check them themselves (with psycopg2's TypeError).
_PLAIN: Any = _Cursor
if TYPE_CHECKING:
    _MixinBase = _Cursor  # what the mixin's methods call through super()
else:
    _MixinBase = object  # a mixin: psycopg2's cursor class comes from the class it is mixed into

__all__ = [
    "DEFAULT_COPY_SIZE",
    "CopyCursorMixin",
    "CopyUnavailableError",
    "copy_expert",
    "copy_from",
    "copy_to",
]

#: psycopg2's default ``size`` for ``copy_expert``/``copy_from`` (``DEFAULT_COPYBUFF``).
DEFAULT_COPY_SIZE = 8192


# --------------------------------------------------------------------------------------------
# Public functions


def copy_expert(cursor: _Cursor, sql: object, file: object, size: int = DEFAULT_COPY_SIZE) -> int:
    """Run the ``COPY ... FROM STDIN`` or ``COPY ... TO STDOUT`` statement ``sql`` on ``cursor``.

    The cooperative counterpart of psycopg2's ``cursor.copy_expert()``, usable while a wait
    callback is installed (psycopg2's own refuses then). Without one, psycopg2's own runs.

    :param cursor: a psycopg2 cursor (any class; not a named cursor).
    :param sql: the statement: ``str``, ``bytes`` or a ``psycopg2.sql`` composable.
    :param file: for COPY FROM, an object with ``read(size)`` returning ``bytes`` or ``str``
        (encoded in the connection's encoding), ``b""``/``""`` at the end; for COPY TO, an
        object with ``write(data)``; a text file (:class:`io.TextIOBase`) receives ``str``.
        The sink receives whole rows, several per ``write()`` call.
    :param size: the ``size`` passed to ``file.read()``.
    :return: the number of rows copied. Under psycogreen's callback ``cursor.rowcount`` and
        ``cursor.query`` are set as psycopg2 sets them; under another one they are left alone.
    :raises psycopg2.Error: the server's error, as the usual ``psycopg2.errors`` subclass;
        ``QueryCanceled`` when a :func:`psycogreen.core.timeout` ran out (connection kept), or
        when the source's ``read()`` raised (``COPY from stdin failed: error in .read() call:
        ...``, as psycopg2 reports it; the exception from ``read()`` is its ``__cause__``).
    :raises CopyUnavailableError: COPY cannot be made cooperative here (uWSGI, a wait
        callback psycogreen does not know, a libpq without the needed functions).

    Anything the scheduler throws in (a timeout, a kill) or the sink raises propagates
    unchanged once the COPY was stopped on the server; the connection is then usable again
    after ``rollback()`` or, if the server could not be reached in time, closed.

    .. versionadded:: 1.0
    """
    conn = _check_cursor(cursor, "copy_expert")
    if not (hasattr(file, "read") or hasattr(file, "write")):
        message = (
            "file must be a readable file-like object for COPY FROM; "
            "a writable file-like object for COPY TO."
        )
        raise TypeError(message)
    if not _green():
        _PLAIN.copy_expert(cursor, sql, file, size)
        return int(cursor.rowcount)
    return _copy(cursor, conn, sql, file, size)


def copy_from(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
    cursor: _Cursor,
    file: object,
    table: str,
    sep: str = "\t",
    null: str = "\\N",
    size: int = DEFAULT_COPY_SIZE,
    columns: Iterable[str] | None = None,
) -> int:
    """Copy ``file`` into ``table``: psycopg2's ``cursor.copy_from()``, cooperatively.

    Builds psycopg2's statement (``COPY "table"("column",...) FROM stdin WITH DELIMITER AS
    sep NULL AS null``: ``table`` and each column are quoted as identifiers, as psycopg2 2.9
    quotes them, so ``"schema.table"`` names a table with a dot in its name) and runs it
    with :func:`copy_expert`.

    :return: the number of rows copied.

    .. versionadded:: 1.0
    """
    if not hasattr(file, "read"):
        raise TypeError("argument 1 must have a .read() method")
    if not _green():
        _PLAIN.copy_from(cursor, file, table, sep, null, size, columns)
        return int(cursor.rowcount)
    conn = _check_cursor(cursor, "copy_from")
    sql = _copy_statement(conn, "copy_from", table, sep, null, columns)
    return _copy(cursor, conn, sql, file, size)


def copy_to(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
    cursor: _Cursor,
    file: object,
    table: str,
    sep: str = "\t",
    null: str = "\\N",
    columns: Iterable[str] | None = None,
) -> int:
    """Copy ``table`` into ``file``: psycopg2's ``cursor.copy_to()``, cooperatively.

    :return: the number of rows copied.

    .. versionadded:: 1.0
    """
    if not hasattr(file, "write"):
        raise TypeError("argument 1 must have a .write() method")
    if not _green():
        _PLAIN.copy_to(cursor, file, table, sep, null, columns)
        return int(cursor.rowcount)
    conn = _check_cursor(cursor, "copy_to")
    sql = _copy_statement(conn, "copy_to", table, sep, null, columns)
    return _copy(cursor, conn, sql, file, DEFAULT_COPY_SIZE)


class CopyCursorMixin(_MixinBase):
    """Make a psycopg2 cursor class's ``copy_*`` methods work under a wait callback.

    ``class Cursor(CopyCursorMixin, psycopg2.extensions.cursor)`` (or with any cursor class,
    e.g. ``RealDictCursor``), then ``conn.cursor(cursor_factory=Cursor)`` or
    ``psycopg2.connect(..., cursor_factory=Cursor)``. While a wait callback is installed the
    methods run :func:`copy_expert`, :func:`copy_from`, :func:`copy_to`; otherwise psycopg2's
    own. Either way they return ``None``, as psycopg2's do (the module-level functions return
    the row count).

    .. versionadded:: 1.0
    """

    # file: Any, as psycopg2 takes any object with read() or write() (the stubs' protocols
    # differ per method).
    def copy_expert(self, sql: Any, file: Any, size: int = DEFAULT_COPY_SIZE) -> None:  # noqa: ANN401 (psycopg2's)
        """``cursor.copy_expert()``; see :func:`psycogreen.core.copy_expert`."""
        if _green():
            copy_expert(self, sql, file, size)
        else:
            super().copy_expert(sql, file, size)

    def copy_from(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
        self,
        file: Any,  # noqa: ANN401 (psycopg2's)
        table: str,
        sep: str = "\t",
        null: str = "\\N",
        size: int = DEFAULT_COPY_SIZE,
        columns: Iterable[str] | None = None,
    ) -> None:
        """``cursor.copy_from()``; see :func:`psycogreen.core.copy_from`."""
        if _green():
            copy_from(self, file, table, sep, null, size, columns)
        else:
            super().copy_from(file, table, sep, null, size, columns)

    def copy_to(
        self,
        file: Any,  # noqa: ANN401 (psycopg2's)
        table: str,
        sep: str = "\t",
        null: str = "\\N",
        columns: Iterable[str] | None = None,
    ) -> None:
        """``cursor.copy_to()``; see :func:`psycogreen.core.copy_to`."""
        if _green():
            copy_to(self, file, table, sep, null, columns)
        else:
            super().copy_to(file, table, sep, null, columns)


# --------------------------------------------------------------------------------------------
# Checks and statement building


def _green() -> bool:
    return psycopg2.extensions.get_wait_callback() is not None


def _check_cursor(cursor: object, method: str) -> _Connection:
    """The checks psycopg2 makes before a COPY (``cursor_type.c``), with its messages."""
    if not isinstance(cursor, psycopg2.extensions.cursor):
        message = f"{method} needs a psycopg2 cursor, not {type(cursor).__qualname__}"
        raise TypeError(message)
    if cursor.closed:
        raise psycopg2.InterfaceError("cursor already closed")
    if cursor.name is not None:
        message = f"{method} cannot be used with a named cursor"
        raise psycopg2.ProgrammingError(message)
    conn = cursor.connection
    if conn.async_:
        message = f"{method} cannot be used in asynchronous mode"
        raise psycopg2.ProgrammingError(message)
    if conn.status == psycopg2.extensions.STATUS_PREPARED:
        message = f"{method} cannot be used with a prepared two-phase transaction"
        raise psycopg2.ProgrammingError(message)
    return conn


def _statement(conn: _Connection, sql: object) -> bytes:
    if hasattr(sql, "as_string"):  # psycopg2.sql.Composable
        sql = sql.as_string(conn)
    if isinstance(sql, str):
        sql = sql.encode(codec(conn))
    if not isinstance(sql, bytes):
        message = f"argument 1 must be a string or unicode object: got {type(sql).__name__} instead"
        raise TypeError(message)
    if b"\0" in sql:
        raise ValueError("the query contains a NUL character")
    return sql


def _copy_statement(  # noqa: PLR0913, PLR0917
    conn: _Connection,
    method: str,
    table: str,
    sep: str,
    null: str,
    columns: Iterable[str] | None,
) -> bytes:
    """psycopg2's statement for copy_from/copy_to (``cursor_type.c``: ``curs_copy_from``).

    psycopg2 >= 2.9 quotes the table name whole and each column with ``PQescapeIdentifier``
    (``psyco_escape_identifier``), which ``quote_ident`` calls too, and quotes the delimiter
    and the null string as literals (``psyco_escape_string``: ``E''`` when
    ``standard_conforming_strings`` is off).
    """
    values: tuple[tuple[str, object], ...] = (("table", table), ("sep", sep), ("null", null))
    for name, value in values:
        # psycopg2 parses them with PyArg's "s": a str without NUL characters.
        if not isinstance(value, str):
            message = f"{method}() argument '{name}' must be str, not {type(value).__name__}"
            raise TypeError(message)
        if "\0" in value:
            raise ValueError("embedded null character")

    def literal(value: str) -> str:
        quoted = QuotedString(value)
        quoted.prepare(conn)
        return quoted.getquoted().decode(codec(conn))

    column_list = ""
    if columns is not None:
        names = [quote_ident(column, conn) for column in columns]
        # An empty list gives psycopg2's ")" (its loop leaves only the closing parenthesis),
        # and so the same syntax error from the server.
        column_list = "(" + ",".join(names) + ")" if names else ")"
    direction = "FROM stdin" if method == "copy_from" else "TO stdout"
    sql = (
        f"COPY {quote_ident(table, conn)}{column_list} {direction} "
        f"WITH DELIMITER AS {literal(sep)} NULL AS {literal(null)}"
    )
    return _statement(conn, sql)


def _waits() -> tuple[WaitFunc, WaitFunc]:
    """The installed callback's scheduler waits, or the reason COPY cannot be cooperative."""
    record, scheduler, callback = installed_backend()
    if callback is None:
        raise CopyUnavailableError("no wait callback is installed: use psycopg2's own COPY")
    if record is not None:
        if record.copy_refusal is not None:
            message = f"COPY cannot run cooperatively under {record.name}: {record.copy_refusal}"
            raise CopyUnavailableError(message)
        return waits_here(record)
    if scheduler is not None:
        message = (
            f"COPY cannot run cooperatively under {scheduler}: its psycogreen backend is "
            f"not installed (pip install psycogreen-{scheduler})"
        )
    else:
        message = (
            f"COPY cannot run cooperatively: the installed wait callback ({callback!r}) is "
            "not psycogreen's, so psycogreen does not know which scheduler to wait through. "
            "Install psycogreen's with patch_psycopg() (force=True replaces the other one)"
        )
    raise CopyUnavailableError(message)


def _lib() -> _libpq.CopyLibPQ:
    try:
        return _libpq.load_copy()
    except CopyLibPQError as exc:
        message = f"COPY cannot run cooperatively: {exc}"
        raise CopyUnavailableError(message) from exc


# --------------------------------------------------------------------------------------------
# The COPY itself


def _copy(cursor: _Cursor, conn: _Connection, sql: object, file: object, size: int) -> int:
    """Run the COPY ``sql`` cooperatively; return the row count."""
    if _copy_execute.supports(conn):
        wait_read, wait_write = _waits()
        lib = _lib()
        _refuse_if_busy(conn)
        _copy_execute.run(cursor, sql, file, size, (wait_read, wait_write), lib)
        return int(cursor.rowcount)
    return _run(conn, _statement(conn, sql), file, size)


def _refuse_if_busy(conn: object) -> None:
    if inflight:
        # Another task's operation on this connection is in flight: the guard's error.
        refuse(conn, "COPY")


def _run(conn: _Connection, sql: bytes, file: object, size: int) -> int:
    wait_read, wait_write = _waits()
    lib = _lib()
    if conn.closed:
        raise psycopg2.InterfaceError("connection already closed")
    _refuse_if_busy(conn)
    timeout = copy_timeout(conn)
    if not conn.autocommit and conn.status == psycopg2.extensions.STATUS_READY:
        # psycopg2 sends BEGIN itself (see the module docstring).
        begin = psycopg2.extensions.cursor(conn)
        try:
            begin.execute("SELECT 1")
        finally:
            begin.close()
    ptr = conn.pgconn_ptr
    if not ptr or lib.PQbackendPID(ptr) != conn.get_backend_pid():
        raise psycopg2.InterfaceError("connection already closed")
    blocking = not lib.PQisnonblocking(ptr)
    if blocking and lib.PQsetnonblocking(ptr, 1) != 0:  # a connection made before patching
        message = (lib.PQerrorMessage(ptr) or b"").decode(errors="replace")
        raise psycopg2.OperationalError(message)
    # Mark the connection in use, as the wait callback does for psycopg2's own operations:
    # the guarded connections (psycopg2.connect() once patched) then refuse another task's
    # statement, commit() or close() with ConnectionBusyError while the COPY runs, instead of
    # letting it desynchronise psycopg2's transaction state.
    inflight[id(conn)] = current_task()
    copy = None
    try:
        copy = Copy(conn, lib, ptr, wait_read, wait_write, timeout)
        return copy.run(sql, file, size)
    finally:
        inflight.pop(id(conn), None)
        if copy is not None:
            os.close(copy.fd)
        if blocking and conn.pgconn_ptr == ptr and not conn.closed:
            lib.PQsetnonblocking(ptr, 0)
