# SPDX-License-Identifier: BSD-3-Clause
"""The COPY loop: one COPY's libpq state machine on psycopg2's ``PGconn``, and its cleanup.

Used by both ways COPY runs (``_copy``: the whole COPY driven here; ``_copy_execute``: the data
moved inside psycopg2's own ``execute()``). See ``_copy``'s docstring for the protocol steps.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import time
from collections.abc import Callable
from typing import Any, NoReturn, cast

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from psycogreen.core import _cancel, _libpq, _timeout
from psycogreen.core._copy_errors import CopyUnavailableError, class_fallback
from psycogreen.core._libpq import (
    CONNECTION_BAD,
    PG_DIAG_SQLSTATE,
    PGRES_COMMAND_OK,
    PGRES_COPY_IN,
    PGRES_COPY_OUT,
    PGRES_FATAL_ERROR,
    PGRES_NONFATAL_ERROR,
)
from psycogreen.core._observe import reports_copy_stop
from psycogreen.core._types import WaitFunc

__all__ = ["Copy", "Expired", "codec", "copy_timeout", "dup"]

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


class Expired(Exception):  # noqa: N818 (private signal)
    """The psycogreen timeout of the COPY ran out."""


def codec(conn: psycopg2.extensions.connection) -> str:
    """The Python codec of the connection's client encoding."""
    return str(psycopg2.extensions.encodings.get(conn.encoding, "utf-8"))


def copy_timeout(conn: object) -> float | None:
    """The psycogreen deadline for this COPY, by the precedence of every other operation.

    The ``timeout`` bound to the installed callback with ``functools.partial`` comes first
    (``_timeout.limit`` states the rest).
    """
    callback = psycopg2.extensions.get_wait_callback()
    bound = None
    if isinstance(callback, functools.partial) and callback.keywords.get("timeout") is not None:
        bound = float(callback.keywords["timeout"])
    return _timeout.limit(id(conn), bound)


def dup(fd: int) -> int:
    try:
        return os.dup(fd)
    except OSError as exc:
        message = f"COPY cannot watch the connection's socket: dup() failed: {exc}"
        raise CopyUnavailableError(message) from exc


class Copy:
    """One COPY on one connection: the libpq state machine and its cleanup."""

    def __init__(  # noqa: PLR0913, PLR0917
        self,
        conn: psycopg2.extensions.connection,
        lib: _libpq.CopyLibPQ,
        ptr: int,
        wait_read: WaitFunc,
        wait_write: WaitFunc,
        timeout: float | None,
        *,
        in_callback: bool = False,
    ) -> None:
        self.conn = conn
        self.lib = lib
        self.ptr = ptr
        self.cptr = ctypes.c_void_p(ptr)
        # The waits watch a duplicate of the socket: another task's close() closes libpq's
        # descriptor, and a scheduler asked to watch a closed descriptor can abort the process
        # (libev asserts on EBADF from epoll_ctl) or watch whatever file reuses the number.
        # The duplicate keeps the socket's registration valid until the COPY has noticed.
        self.fd = dup(int(lib.PQsocket(ptr)))
        self.wait_read = wait_read
        self.wait_write = wait_write
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.next_yield = time.monotonic() + _YIELD_EVERY
        self.codec = codec(conn)
        # Set once something of ours is in flight on the connection, cleared once it ended.
        self.busy = False
        # What the server is doing: "wait" (statement sent), "in"/"out" (COPY data flowing),
        # "end" (COPY data done, results pending).
        self.phase = ""
        # Inside psycopg2's wait (``_copy_execute``): psycopg2 holds the connection's mutex,
        # reads the results itself, and closes the connection when an exception leaves the
        # wait; a close() from here would wait for that mutex forever.
        self.in_callback = in_callback
        # The exception read() raised, which ended a COPY FROM as psycopg2 ends it.
        self.read_error: Exception | None = None

    # -- checks and waits --------------------------------------------------------------------

    def check(self) -> None:
        """After any switch: the connection may have been closed by another task."""
        conn = self.conn
        if conn.closed or conn.pgconn_ptr != self.ptr:
            self.busy = False  # the PGconn is gone: nothing left to clean up
            raise psycopg2.InterfaceError("connection already closed")

    def wait(self, wait: WaitFunc) -> bool:
        """Wait for the socket for at most one slice (or what is left of the deadline)."""
        timeout = _WAIT_SLICE
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise Expired
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
            raise Expired
        wait(self.fd, 0)
        self.check()
        self.next_yield = time.monotonic() + _YIELD_EVERY

    # -- libpq steps ---------------------------------------------------------------------------

    def fail(self, kind: type[BaseException] | None = None) -> NoReturn:
        """Raise libpq's connection error; close a connection libpq has lost."""
        message = (self.lib.PQerrorMessage(self.ptr) or b"").decode(self.codec, "replace")
        if self.lib.PQstatus(self.ptr) == CONNECTION_BAD:
            self.busy = False
            if not self.in_callback:  # (there, psycopg2 closes it when this propagates)
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
        lib = self.lib
        message = (lib.PQresultErrorMessage(res) or b"").decode(self.codec, "replace")
        sqlstate_raw = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE)
        sqlstate = sqlstate_raw.decode("ascii", "replace") if sqlstate_raw else None
        cls: type[psycopg2.Error] = psycopg2.DatabaseError
        if sqlstate:
            try:
                cls = psycopg2.errors.lookup(sqlstate)
            except KeyError:
                cls = class_fallback(sqlstate)
        # psycopg2 strips the severity from the message (pqpath.c: strip_severity), not from
        # pgerror.
        exc = cls(_strip_severity(message))
        # pgerror/pgcode are read-only attributes; psycopg2's pickle support sets them (Any:
        # the stubs do not declare __setstate__).
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
        if not self.lib.PQsendQuery(self.cptr, sql):
            # Typically "another command is already in progress": a query of another task
            # on this connection. Nothing of ours is in flight: leave libpq alone.
            self.fail(psycopg2.ProgrammingError)
        self.busy = True
        self.phase = "wait"
        try:
            return self.transfer(file, size)
        except Expired:
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
            raise error from self.read_error
        return count

    def copy_in(self, read: Callable[..., object], size: int) -> None:
        """Move ``read(size)``'s data to the server until it returns an empty string."""
        lib = self.lib
        put = lib.PQputCopyData
        cptr = self.cptr
        codec = self.codec
        wait_write = self.wait_write
        queued = 0
        while True:
            try:
                data = read(size)
                if isinstance(data, str):  # a text file (conn_encode, strict)
                    data = data.encode(codec)
            except Exception as exc:  # noqa: BLE001 (psycopg2 reports any, through the server)
                self.check()
                self.read_error = exc
                self.put_end(_read_failure(exc))
                self.phase = "end"
                return
            self.check()  # the source may have switched tasks
            if not isinstance(data, bytes):
                # psycopg2 ends the COPY the same way, with no exception to name.
                self.put_end(b"error in .read() call")
                self.phase = "end"
                return
            if not data:
                break
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
        self.phase = "end"  # queued: an interruption from here on must not end it again
        self.flush()

    def copy_out(self, write: Callable[..., object], text: bool) -> None:  # noqa: FBT001
        """Move the rows to ``write``, a batch per read of libpq's input buffer."""
        consume = self.lib.PQconsumeInput
        cptr = self.cptr
        codec = self.codec
        wait_read = self.wait_read
        chunks: list[bytes] = []
        get = self.row_reader(chunks.append)
        while True:
            n = get()
            if n == -1:
                self.phase = "end"  # the server sent CopyDone: nothing left to discard
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

    @reports_copy_stop(Expired)
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
                raise Expired  # noqa: TRY301 (handled just below, like any failure)
            if self.phase == "in":
                # The server then discards COPY data until CopyDone or CopyFail: CopyFail,
                # which also ends the COPY (rolled back) if the cancel came too late.
                self.put_end(_ABORT_MESSAGE)
            if self.in_callback:
                if self.phase == "out":
                    self.discard()
                self.settle()
                self.busy = False
                return 0, None  # psycopg2 reads the server's error itself
            return self.results()
        except BaseException:
            self.busy = False
            if not self.in_callback and not self.conn.closed:
                self.conn.close()
            raise

    def settle(self) -> None:
        """Wait until libpq holds the next result, within the deadline (for psycopg2 to read)."""
        lib = self.lib
        if not lib.PQconsumeInput(self.cptr):
            self.fail()
        while lib.PQisBusy(self.cptr):
            self.wait(self.wait_read)
            if not lib.PQconsumeInput(self.cptr):
                self.fail()


def _strip_severity(message: str) -> str:
    if len(message) > 8 and message.startswith(("ERROR:  ", "FATAL:  ", "PANIC:  ")):
        return message[8:]
    return message


# psycopg2's buffer for the CopyFail message (pqpath.c: _pq_copy_in_v3, char buf[1024]).
_READ_FAILURE_MAX = 1023
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


def _read_failure(exc: BaseException) -> bytes:
    """psycopg2's CopyFail message for an exception from ``read()``: the type, the message."""
    kind = type(exc)
    # The C type's tp_name, as psycopg2 prints it: the bare name of a class defined in Python,
    # the dotted one of an extension's static type.
    name = kind.__name__
    if not kind.__flags__ & _HEAPTYPE and kind.__module__ != "builtins":
        name = f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(exc).encode()
    except Exception:  # noqa: BLE001 (psycopg2 then sends the message without it)
        return b"error in .read() call"
    message = b"error in .read() call: %s %s" % (name.encode(), text)
    # A C string: it ends at the buffer's end, or at a NUL.
    return message[:_READ_FAILURE_MAX].split(b"\0", 1)[0]


def _method(file: object, name: str, what: str) -> Callable[..., object]:
    method: Callable[..., object] | None = getattr(file, name, None)
    if method is None:
        message = f"{what} needs a file with a .{name}() method"
        raise TypeError(message)
    return method
