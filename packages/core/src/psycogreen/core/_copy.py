# SPDX-License-Identifier: BSD-3-Clause
"""COPY FROM STDIN / TO STDOUT that waits through the scheduler, like every other query.

psycopg2 refuses ``copy_expert()``, ``copy_from()`` and ``copy_to()`` as soon as any wait
callback is installed (``EXC_IF_GREEN`` in its ``cursor_type.c``): its COPY loops call libpq in
blocking mode. Here the COPY protocol is driven on psycopg2's own ``PGconn`` through the libpq
psycopg2 is linked against (``_copy_libpq``), in libpq's non-blocking mode, waiting with the
installed backend's ``wait_read``/``wait_write``:

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

An interruption (the scheduler's timeout, a kill, an exception from the file, the psycogreen
:func:`~psycogreen.core.timeout`) aborts the COPY on the server before propagating: core's
non-blocking cancel request stops the statement, a COPY FROM is then ended with ``CopyFail``
(``PQputCopyEnd`` with a message: the server rolls the statement back), the remaining rows of
a COPY TO are discarded. If that cleanup cannot finish within the cancel timeout, the
connection is closed: it is never left half-way through a COPY.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, cast

from psycogreen.core import _cancel, _copy_libpq, _timeout
from psycogreen.core._backend import waits_here
from psycogreen.core._busy import refuse
from psycogreen.core._copy_libpq import (
    CONNECTION_BAD,
    PG_DIAG_SQLSTATE,
    PGRES_COMMAND_OK,
    PGRES_COPY_IN,
    PGRES_COPY_OUT,
    PGRES_FATAL_ERROR,
    PGRES_NONFATAL_ERROR,
    CopyLibPQError,
)
from psycogreen.core._detect import installed_backend
from psycogreen.core._errors import PsycogreenError
from psycogreen.core._inflight import current_task, inflight
from psycogreen.core._observe import reports_copy_stop
from psycogreen.core._types import WaitFunc

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as _CursorBase  # noqa: N812
else:
    _CursorBase = object

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

# Yield to the scheduler at least this often (seconds) while the socket never blocks.
_YIELD_EVERY = 0.005
# Longest single wait before the connection is re-checked (closed by another task?).
_WAIT_SLICE = 0.25
# COPY FROM: flush libpq's output buffer once this much was queued since the last flush. libpq
# sends by itself every 8 KiB, but only as much as the socket takes without waiting: flushing
# here bounds its buffer (it grows without limit in non-blocking mode) and waits when the
# server is slower than the source.
_FLUSH_EVERY = 256 * 1024
# Longest chunk handed to PQputCopyData, whose length is a C int.
_MAX_PUT = 1 << 30
# COPY TO: the buffer PQgetlineAsync copies each row into (a longer row comes in pieces).
_COPY_OUT_BUFFER = 64 * 1024
_ABORT_MESSAGE = b"COPY interrupted on the client (psycogreen)"


class CopyUnavailableError(PsycogreenError, RuntimeError):
    """COPY cannot run without blocking the scheduler here; the message says why.

    .. versionadded:: 1.0
    """


class _Expired(Exception):  # noqa: N818 (private signal)
    """The psycogreen timeout of the COPY ran out."""


# --------------------------------------------------------------------------------------------
# Public functions


def copy_expert(
    cursor: _CursorBase, sql: object, file: object, size: int = DEFAULT_COPY_SIZE
) -> int:
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
    :return: the number of rows copied (``cursor.rowcount`` is left alone).
    :raises psycopg2.Error: the server's error, as the usual ``psycopg2.errors`` subclass;
        ``QueryCanceled`` when a :func:`psycogreen.core.timeout` ran out (connection kept).
    :raises CopyUnavailableError: COPY cannot be made cooperative here (uWSGI, a wait
        callback psycogreen does not know, a libpq without the needed functions).

    Anything the scheduler throws in (a timeout, a kill) or the file raises propagates
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
        base = _psycopg2_cursor()
        base.copy_expert(cursor, sql, file, size)
        return int(cursor.rowcount)
    return _run(conn, _statement(conn, sql), file, size)


def copy_from(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
    cursor: _CursorBase,
    file: object,
    table: str,
    sep: str = "\t",
    null: str = "\\N",
    size: int = DEFAULT_COPY_SIZE,
    columns: Iterable[str] | None = None,
) -> int:
    """Copy ``file`` into ``table``: psycopg2's ``cursor.copy_from()``, cooperatively.

    Builds psycopg2's statement (``COPY table(columns) FROM stdin WITH DELIMITER AS sep
    NULL AS null``; ``table`` and ``columns`` are not quoted, as in psycopg2) and runs it
    with :func:`copy_expert`.

    :return: the number of rows copied.

    .. versionadded:: 1.0
    """
    if not hasattr(file, "read"):
        raise TypeError("argument 1 must have a .read() method")
    if not _green():
        _psycopg2_cursor().copy_from(cursor, file, table, sep, null, size, columns)
        return int(cursor.rowcount)
    conn = _check_cursor(cursor, "copy_from")
    sql = _copy_statement(conn, "FROM stdin", table, sep, null, columns)
    return _run(conn, sql, file, size)


def copy_to(  # noqa: PLR0913, PLR0917 (psycopg2's signature)
    cursor: _CursorBase,
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
        _psycopg2_cursor().copy_to(cursor, file, table, sep, null, columns)
        return int(cursor.rowcount)
    conn = _check_cursor(cursor, "copy_to")
    sql = _copy_statement(conn, "TO stdout", table, sep, null, columns)
    return _run(conn, sql, file, DEFAULT_COPY_SIZE)


class CopyCursorMixin(_CursorBase):
    """Make a psycopg2 cursor class's ``copy_*`` methods work under a wait callback.

    ``class Cursor(CopyCursorMixin, psycopg2.extensions.cursor)`` (or with any cursor class,
    e.g. ``RealDictCursor``), then ``conn.cursor(cursor_factory=Cursor)`` or
    ``psycopg2.connect(..., cursor_factory=Cursor)``. While a wait callback is installed the
    methods run :func:`copy_expert`, :func:`copy_from`, :func:`copy_to`; otherwise psycopg2's
    own. Either way they return the number of rows copied.

    .. versionadded:: 1.0
    """

    def copy_expert(self, sql: Any, file: Any, size: int = DEFAULT_COPY_SIZE) -> int:  # type: ignore[override]  # noqa: ANN401
        """``cursor.copy_expert()``; see :func:`psycogreen.core.copy_expert`."""
        if _green():
            return copy_expert(self, sql, file, size)
        super().copy_expert(sql, file, size)
        return int(self.rowcount)

    def copy_from(  # type: ignore[override]  # noqa: PLR0913, PLR0917 (psycopg2's signature)
        self,
        file: Any,  # noqa: ANN401
        table: str,
        sep: str = "\t",
        null: str = "\\N",
        size: int = DEFAULT_COPY_SIZE,
        columns: Iterable[str] | None = None,
    ) -> int:
        """``cursor.copy_from()``; see :func:`psycogreen.core.copy_from`."""
        if _green():
            return copy_from(self, file, table, sep, null, size, columns)
        super().copy_from(file, table, sep, null, size, columns)
        return int(self.rowcount)

    def copy_to(  # type: ignore[override]
        self,
        file: Any,  # noqa: ANN401
        table: str,
        sep: str = "\t",
        null: str = "\\N",
        columns: Iterable[str] | None = None,
    ) -> int:
        """``cursor.copy_to()``; see :func:`psycogreen.core.copy_to`."""
        if _green():
            return copy_to(self, file, table, sep, null, columns)
        super().copy_to(file, table, sep, null, columns)
        return int(self.rowcount)


# --------------------------------------------------------------------------------------------
# Checks and statement building


def _psycopg2_cursor() -> Any:  # noqa: ANN401 (psycopg2's cursor type)
    import psycopg2.extensions  # noqa: PLC0415

    return psycopg2.extensions.cursor


def _green() -> bool:
    import psycopg2.extensions  # noqa: PLC0415 (psycopg2 is optional)

    return psycopg2.extensions.get_wait_callback() is not None


def _check_cursor(cursor: Any, method: str) -> Any:  # noqa: ANN401 (a psycopg2 connection)
    """The checks psycopg2 makes before a COPY (``cursor_type.c``), with its messages."""
    import psycopg2  # noqa: PLC0415
    import psycopg2.extensions  # noqa: PLC0415

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


def _statement(conn: Any, sql: object) -> bytes:  # noqa: ANN401
    if hasattr(sql, "as_string"):  # psycopg2.sql.Composable
        sql = sql.as_string(conn)
    if isinstance(sql, str):
        sql = sql.encode(_codec(conn))
    if not isinstance(sql, bytes):
        message = f"argument 1 must be a string or unicode object: got {type(sql).__name__} instead"
        raise TypeError(message)
    if b"\0" in sql:
        raise ValueError("the query contains a NUL character")
    return sql


def _copy_statement(  # noqa: PLR0913, PLR0917
    conn: Any,  # noqa: ANN401
    direction: str,
    table: str,
    sep: str,
    null: str,
    columns: Iterable[str] | None,
) -> bytes:
    """psycopg2's statement for copy_from/copy_to (``curs_copy_from``/``curs_copy_to``)."""
    from psycopg2.extensions import QuotedString  # noqa: PLC0415

    def quote(value: str) -> str:
        literal = QuotedString(value)
        literal.prepare(conn)  # E'' when standard_conforming_strings is off, as psycopg2
        return literal.getquoted().decode(_codec(conn))

    column_list = ""
    if columns is not None:
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in columns]
        if names:
            column_list = "(" + ",".join(names) + ")"
    sql = (
        f"COPY {table}{column_list} {direction} "
        f"WITH DELIMITER AS {quote(sep)} NULL AS {quote(null)}"
    )
    return _statement(conn, sql)


def _codec(conn: Any) -> str:  # noqa: ANN401
    import psycopg2.extensions  # noqa: PLC0415

    return str(psycopg2.extensions.encodings.get(conn.encoding, "utf-8"))


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


def _copy_timeout(conn: object) -> float | None:
    """The psycogreen deadline for this COPY, by the precedence of every other operation.

    The ``timeout`` bound to the installed callback with ``functools.partial`` comes first
    (``_timeout.limit`` states the rest).
    """
    import psycopg2.extensions  # noqa: PLC0415

    callback = psycopg2.extensions.get_wait_callback()
    bound = None
    if isinstance(callback, functools.partial) and callback.keywords.get("timeout") is not None:
        bound = float(callback.keywords["timeout"])
    return _timeout.limit(id(conn), bound)


def _lib() -> _copy_libpq.CopyLibPQ:
    try:
        return _copy_libpq.load()
    except CopyLibPQError as exc:
        message = f"COPY cannot run cooperatively: {exc}"
        raise CopyUnavailableError(message) from exc


# --------------------------------------------------------------------------------------------
# The COPY itself


def _run(conn: Any, sql: bytes, file: object, size: int) -> int:  # noqa: ANN401
    import psycopg2  # noqa: PLC0415
    import psycopg2.extensions  # noqa: PLC0415

    wait_read, wait_write = _waits()
    lib = _lib()
    if conn.closed:
        raise psycopg2.InterfaceError("connection already closed")
    if inflight:
        # Another task's operation on this connection is in flight: the guard's error.
        refuse(conn, "COPY")
    timeout = _copy_timeout(conn)
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
        copy = _Copy(conn, lib, ptr, wait_read, wait_write, timeout)
        return copy.run(sql, file, size)
    finally:
        inflight.pop(id(conn), None)
        if copy is not None:
            os.close(copy.fd)
        if blocking and conn.pgconn_ptr == ptr and not conn.closed:
            lib.PQsetnonblocking(ptr, 0)


def _dup(fd: int) -> int:
    try:
        return os.dup(fd)
    except OSError as exc:
        message = f"COPY cannot watch the connection's socket: dup() failed: {exc}"
        raise CopyUnavailableError(message) from exc


class _Copy:
    """One COPY on one connection: the libpq state machine and its cleanup."""

    def __init__(  # noqa: PLR0913, PLR0917
        self,
        conn: Any,  # noqa: ANN401
        lib: _copy_libpq.CopyLibPQ,
        ptr: int,
        wait_read: WaitFunc,
        wait_write: WaitFunc,
        timeout: float | None,
    ) -> None:
        self.conn = conn
        self.lib = lib
        self.ptr = ptr
        self.cptr = ctypes.c_void_p(ptr)
        # The waits watch a duplicate of the socket: another task's close() closes libpq's
        # descriptor, and a scheduler asked to watch a closed descriptor can abort the process
        # (libev asserts on EBADF from epoll_ctl) or watch whatever file reuses the number.
        # The duplicate keeps the socket's registration valid until the COPY has noticed.
        self.fd = _dup(int(lib.PQsocket(ptr)))
        self.wait_read = wait_read
        self.wait_write = wait_write
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.next_yield = time.monotonic() + _YIELD_EVERY
        self.codec = _codec(conn)
        # Set once something of ours is in flight on the connection, cleared once it ended.
        self.busy = False
        # What the server is doing: "wait" (statement sent), "in"/"out" (COPY data flowing),
        # "end" (COPY data done, results pending).
        self.phase = ""

    # -- checks and waits --------------------------------------------------------------------

    def check(self) -> None:
        """After any switch: the connection may have been closed by another task."""
        conn = self.conn
        if conn.closed or conn.pgconn_ptr != self.ptr:
            import psycopg2  # noqa: PLC0415

            self.busy = False  # the PGconn is gone: nothing left to clean up
            raise psycopg2.InterfaceError("connection already closed")

    def wait(self, wait: WaitFunc) -> bool:
        """Wait for the socket for at most one slice (or what is left of the deadline)."""
        timeout = _WAIT_SLICE
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Expired
            timeout = min(timeout, remaining)
        ready = wait(self.fd, timeout)
        self.check()
        self.next_yield = time.monotonic() + _YIELD_EVERY
        return ready

    def pause(self, wait: WaitFunc) -> None:
        """Let the scheduler run other tasks (and fire timeouts), if it is time to."""
        now = time.monotonic()
        if now < self.next_yield:
            return
        if self.deadline is not None and now >= self.deadline:
            raise _Expired
        wait(self.fd, 0)
        self.check()
        self.next_yield = time.monotonic() + _YIELD_EVERY

    # -- libpq steps ---------------------------------------------------------------------------

    def fail(self, kind: type[BaseException] | None = None) -> NoReturn:
        """Raise libpq's connection error; close a connection libpq has lost."""
        import psycopg2  # noqa: PLC0415

        message = (self.lib.PQerrorMessage(self.ptr) or b"").decode(self.codec, "replace")
        if self.lib.PQstatus(self.ptr) == CONNECTION_BAD:
            self.busy = False
            self.conn.close()  # never half-alive: psycopg2 would only notice at its next call
            raise psycopg2.OperationalError(message)
        raise (kind or psycopg2.OperationalError)(message)

    def flush(self) -> None:
        flush = self.lib.PQflush
        while True:
            result = flush(self.cptr)
            if result == 0:
                return
            if result < 0:
                self.fail()
            # libpq read any pending input before returning 1 (pqSendSome), so waiting for
            # writability alone cannot deadlock with a server blocked on sending us notices;
            # the slice bounds the case where that input arrives while we sleep.
            self.wait(self.wait_write)

    def result(self) -> int | None:
        """The next ``PGresult*`` (``None`` at the end), waiting while libpq is busy."""
        lib = self.lib
        cptr = self.cptr
        if not lib.PQconsumeInput(cptr):
            self.fail()
        while lib.PQisBusy(cptr):
            self.wait(self.wait_read)
            if not lib.PQconsumeInput(cptr):
                self.fail()
        res: int | None = lib.PQgetResult(cptr)
        return res

    def error_from(self, res: int) -> BaseException:
        """The psycopg2 exception for an error result, as psycopg2 would raise it."""
        import psycopg2  # noqa: PLC0415
        import psycopg2.errors  # noqa: PLC0415

        lib = self.lib
        message = (lib.PQresultErrorMessage(res) or b"").decode(self.codec, "replace")
        sqlstate_raw = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE)
        sqlstate = sqlstate_raw.decode("ascii", "replace") if sqlstate_raw else None
        cls: type[psycopg2.Error] = psycopg2.DatabaseError
        if sqlstate:
            try:
                cls = psycopg2.errors.lookup(sqlstate)
            except KeyError:
                cls = _class_fallback(sqlstate)
        exc = cls(message)
        # pgerror/pgcode are read-only attributes; psycopg2's pickle support sets them.
        cast("Any", exc).__setstate__({"pgerror": message, "pgcode": sqlstate})
        return exc

    def results(self) -> tuple[int, BaseException | None]:
        """Drain the results: (row count, first error)."""
        lib = self.lib
        count = 0
        error: BaseException | None = None
        while True:
            res = self.result()
            if not res:
                self.busy = False
                return count, error
            try:
                status = lib.PQresultStatus(res)
                if status == PGRES_COMMAND_OK:
                    tuples = lib.PQcmdTuples(res)
                    count = int(tuples) if tuples else 0
                elif status in (PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR):
                    error = error or self.error_from(res)
                elif status in (PGRES_COPY_IN, PGRES_COPY_OUT):
                    # Only reachable if the COPY loop did not end it: end it here.
                    self.end_copy(status)
            finally:
                lib.PQclear(res)

    def end_copy(self, status: int) -> None:
        """End a COPY the main loop did not run (it was interrupted before)."""
        if status == PGRES_COPY_IN:
            self.put_end(_ABORT_MESSAGE)
        else:
            self.discard()

    # -- the COPY ------------------------------------------------------------------------------

    def run(self, sql: bytes, file: object, size: int) -> int:
        """Send ``sql``, move the COPY data, drain the results: the row count."""
        import psycopg2  # noqa: PLC0415

        if not self.lib.PQsendQuery(self.cptr, sql):
            # Typically "another command is already in progress": a query of another task
            # on this connection. Nothing of ours is in flight: leave libpq alone.
            self.fail(psycopg2.ProgrammingError)
        self.busy = True
        self.phase = "wait"
        try:
            return self.transfer(file, size)
        except _Expired:
            return self.abort_for_timeout()
        except BaseException:
            if self.busy:
                self.abort()
            raise

    def transfer(self, file: object, size: int) -> int:
        lib = self.lib
        self.flush()
        res = self.result()
        status = lib.PQresultStatus(res) if res else None
        error: BaseException | None = None
        if status in (PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR):
            error = self.error_from(res)  # type: ignore[arg-type]
        if res:
            lib.PQclear(res)
        if status == PGRES_COPY_IN:
            self.phase = "in"
            self.copy_in(_method(file, "read", "COPY FROM"), size)
        elif status == PGRES_COPY_OUT:
            self.phase = "out"
            self.copy_out(_method(file, "write", "COPY TO"), isinstance(file, io.TextIOBase))
        # Any other statement ran as execute() would have run it: its count is returned.
        self.phase = "end"
        count, later = self.results()
        error = error or later
        if error is not None:
            raise error
        return count

    def copy_in(self, read: Any, size: int) -> None:  # noqa: ANN401
        lib = self.lib
        put = lib.PQputCopyData
        cptr = self.cptr
        codec = self.codec
        wait_write = self.wait_write
        queued = 0
        while True:
            data = read(size)
            self.check()  # the source may have switched tasks
            if not data:
                break
            if isinstance(data, str):
                data = data.encode(codec)
            elif not isinstance(data, bytes):
                data = bytes(data)
            for start in range(0, len(data), _MAX_PUT):
                chunk = data[start : start + _MAX_PUT] if len(data) > _MAX_PUT else data
                while (result := put(cptr, chunk, len(chunk))) == 0:
                    # Non-blocking and no room: wait for the socket, then retry.
                    self.wait(wait_write)
                    self.flush()
                if result < 0:
                    self.fail()
            queued += len(data)
            if queued >= _FLUSH_EVERY:
                self.flush()
                queued = 0
            self.pause(wait_write)
        self.put_end(None)
        self.phase = "end"

    def put_end(self, message: bytes | None) -> None:
        end = self.lib.PQputCopyEnd
        while (result := end(self.cptr, message)) == 0:
            self.wait(self.wait_write)
            self.flush()
        if result < 0:
            self.fail()
        self.flush()

    def copy_out(self, write: Any, text: bool) -> None:  # noqa: ANN401, FBT001
        """Move the rows to ``write``, a batch per read of libpq's input buffer."""
        consume = self.lib.PQconsumeInput
        cptr = self.cptr
        codec = self.codec
        wait_read = self.wait_read
        chunks: list[bytes] = []
        get = self.row_reader(chunks.append)
        while True:
            n = get()
            if chunks:
                data = b"".join(chunks)
                chunks.clear()
                write(data.decode(codec) if text else data)
                self.check()  # the sink may have switched tasks
                got_rows = True
            else:
                got_rows = False
            if n == -1:
                return
            if n < -1:
                self.fail()
            # n == 0: libpq's buffer holds no complete row. If rows came since the last read,
            # more have most likely arrived already: read without waiting.
            if got_rows:
                self.pause(wait_read)
            else:
                self.wait(wait_read)
            if not consume(cptr):
                self.fail()

    def row_reader(self, append: Callable[[bytes], object]) -> Callable[[], int]:
        """A function appending the rows libpq holds, returning what ended the run (<= 0)."""
        lib = self.lib
        cptr = self.cptr
        getline = lib.fast_PQgetlineAsync
        if getline is not None:
            # One row, or as much of a long row as fits, per call; rows need not stay whole
            # here: the batches are concatenated anyway.
            size = _COPY_OUT_BUFFER
            buffer = ctypes.create_string_buffer(size)
            view = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_char))

            def get_lines() -> int:
                n: int = getline(cptr, buffer, size)
                while n > 0:
                    append(view[:n])  # type: ignore[arg-type]  # bytes (typeshed says list)
                    n = getline(cptr, buffer, size)
                return n

            return get_lines
        getcopy = lib.fast_PQgetCopyData
        free = lib.fast_PQfreemem
        row = ctypes.POINTER(ctypes.c_char)()
        prow = ctypes.byref(row)

        def get_rows() -> int:
            n: int = getcopy(cptr, prow, 1)
            while n > 0:
                append(row[:n])  # type: ignore[arg-type]  # bytes (typeshed says list)
                free(row)  # libpq malloc'ed it
                n = getcopy(cptr, prow, 1)
            return n

        return get_rows

    def discard(self) -> None:
        """Read and drop the rest of a COPY TO."""
        lib = self.lib
        get = lib.fast_PQgetCopyData
        free = lib.fast_PQfreemem
        buf = ctypes.POINTER(ctypes.c_char)()
        pbuf = ctypes.byref(buf)
        while True:
            n = get(self.cptr, pbuf, 1)
            if n > 0:
                free(buf)
            elif n == -1:
                return
            elif n < -1:
                self.fail()
            else:
                self.wait(self.wait_read)
                if not lib.PQconsumeInput(self.cptr):
                    self.fail()

    # -- interruption ------------------------------------------------------------------------

    def abort_for_timeout(self) -> int:
        """The psycogreen timeout ran out: stop the COPY, raise the server's QueryCanceled."""
        import psycopg2  # noqa: PLC0415

        try:
            count, error = self.stop()
        except BaseException as exc:
            message = (
                "psycogreen: the COPY timed out and could not be stopped on the server within "
                f"{_cancel.cancel_timeout():g} s; the connection is closed"
            )
            raise psycopg2.OperationalError(message) from exc
        if error is None:
            return count  # it completed before the cancel took effect
        raise error

    def abort(self) -> None:
        """Stop the COPY on the server before an exception propagates (else close)."""
        try:
            self.stop()
        except BaseException:  # noqa: BLE001, S110 (the original exception propagates)
            pass

    @reports_copy_stop(_Expired)
    def stop(self) -> tuple[int, BaseException | None]:
        """End what is in flight within the cancel timeout, or close the connection.

        :return: the row count and the server's error (the COPY's own, or 57014 for the
            cancel), from the results drained.
        """
        if not self.busy or self.conn.closed:
            return 0, None
        bound = _cancel.cancel_timeout()
        self.deadline = time.monotonic() + bound
        try:
            # A cancel request stops the statement at once: a COPY TO still producing rows,
            # and also a COPY FROM, whose server would otherwise first insert every row
            # already in the socket buffers (megabytes) before reading our CopyFail. A
            # request that arrives once the backend is idle is ignored by the server
            # (postgres.c: ProcessInterrupts, while DoingCommandRead).
            if not _cancel.cancel(self.conn, self.wait_read, self.wait_write, bound):
                raise _Expired  # noqa: TRY301 (handled just below, like any failure)
            if self.phase == "in":
                # The server then discards COPY data until CopyDone or CopyFail: CopyFail,
                # which also ends the COPY (rolled back) if the cancel came too late.
                self.put_end(_ABORT_MESSAGE)
            return self.results()
        except BaseException:
            self.busy = False
            if not self.conn.closed:
                self.conn.close()
            raise


def _method(file: object, name: str, what: str) -> Any:  # noqa: ANN401 (a bound method)
    method = getattr(file, name, None)
    if method is None:
        message = f"{what} needs a file with a .{name}() method"
        raise TypeError(message)
    return method


def _class_fallback(sqlstate: str) -> type[Any]:
    """psycopg2's exception for an unknown SQLSTATE, by its class (``pqpath.c``)."""
    import psycopg2  # noqa: PLC0415

    by_class = {
        "0A": psycopg2.NotSupportedError,
        "21": psycopg2.IntegrityError,
        "22": psycopg2.DataError,
        "23": psycopg2.IntegrityError,
        "24": psycopg2.InternalError,
        "25": psycopg2.InternalError,
        "26": psycopg2.InternalError,
        "27": psycopg2.InternalError,
        "28": psycopg2.OperationalError,
        "2B": psycopg2.InternalError,
        "2D": psycopg2.InternalError,
        "2F": psycopg2.InternalError,
        "34": psycopg2.ProgrammingError,
        "3D": psycopg2.ProgrammingError,
        "3F": psycopg2.ProgrammingError,
        "40": psycopg2.extensions.TransactionRollbackError,
        "42": psycopg2.ProgrammingError,
        "44": psycopg2.ProgrammingError,
        "53": psycopg2.OperationalError,
        "54": psycopg2.OperationalError,
        "55": psycopg2.OperationalError,
        "57": psycopg2.OperationalError,
        "58": psycopg2.OperationalError,
        "F0": psycopg2.InternalError,
        "HV": psycopg2.OperationalError,
        "P0": psycopg2.InternalError,
        "XX": psycopg2.InternalError,
    }
    return by_class.get(sqlstate[:2], psycopg2.DatabaseError)
