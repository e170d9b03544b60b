# SPDX-License-Identifier: BSD-3-Clause
"""COPY sent and finished by psycopg2's own ``execute()``, under psycogreen's wait callback.

psycopg2's ``copy_*`` methods refuse to run under a wait callback (``EXC_IF_GREEN``), but its
``execute()`` sends a COPY statement like any other, waiting through the callback, whose
``poll()`` returns ``POLL_OK`` once the server answered ``CopyInResponse`` or
``CopyOutResponse`` (``pqpath.c``: ``pq_get_result_async`` stops at a COPY result). Left
alone, psycopg2 would then run its own COPY loop without a file ("can't execute COPY FROM: use
the copy_from() method instead") and leave the connection in COPY state.

psycogreen's wait callback runs the hook set here at that ``POLL_OK`` (``_pollhook``): still inside
psycopg2's wait, it moves the data with the scheduler's waits through the libpq psycopg2 is
linked against (``_copy_loop.Copy``), ends the COPY, and polls on. psycopg2 then reads the COPY's
final result itself, as for any statement: ``cursor.rowcount`` ("COPY 3"), ``cursor.query``,
and the server's error with ``pgerror``, ``pgcode``, ``diag`` and ``cursor``, are psycopg2's
own. A statement that fails before any data moves (an unknown table) never reaches the hook.

Inside the wait psycopg2 holds the connection's mutex and the callback owns the connection: an
exception that leaves the hook makes psycopg2 close it (``green_panic``). So an interruption
(a kill, the scheduler's timeout, an exception from the sink) aborts the COPY on the server,
lets psycopg2 read the server's answer, and is re-raised by :func:`run` once ``execute()``
returned; only a failure of that cleanup leaves the wait, and closes the connection.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import psycopg2.extensions

from psycogreen.core import _copy_loop, _pollhook
from psycogreen.core._compat import POLL_OK
from psycogreen.core._libpq import PGRES_COPY_IN, PGRES_COPY_OUT, CopyLibPQ
from psycogreen.core._registry import owner
from psycogreen.core._types import WaitFunc

__all__ = ["run", "supports"]

_Connection = psycopg2.extensions.connection
_execute = psycopg2.extensions.cursor.execute


#: The connection classes whose COPY goes through psycopg2's ``execute()``: the guarded ones,
#: set by ``_guard`` when imported (it sits above this module). Another connection's COPY runs
#: whole in ``_copy``: inside ``execute()`` psycopg2 holds the connection's mutex, and a
#: ``close()`` from another task, which only the guard refuses, would block the whole thread.
guarded: tuple[type, ...] = ()


def supports(conn: object) -> bool:
    """Whether ``conn``'s COPY runs through psycopg2's ``execute()`` and the callback's hook.

    A guarded connection, driven by psycogreen's own wait callback (the callbacks of other
    projects, eventlet's own or psycogreen 1.0.2's, run no hook).
    """
    if not isinstance(conn, guarded):
        return False
    callback = psycopg2.extensions.get_wait_callback()
    return callback is not None and owner(callback)[2]


def run(  # noqa: PLR0913, PLR0917
    cursor: Any,  # noqa: ANN401 (any psycopg2 cursor)
    sql: object,
    file: object,
    size: int,
    waits: tuple[WaitFunc, WaitFunc],
    lib: CopyLibPQ,
) -> None:
    """Run the COPY ``sql`` with psycopg2's ``execute()`` on ``cursor``, ``file`` as its data.

    psycopg2's own ``execute()``: the cursor class's override, if any, is not called, as
    psycopg2's ``copy_*`` methods do not call it.
    """
    conn = cursor.connection
    job = _Job(file, size, waits, lib, _copy_loop.copy_timeout(conn))
    _pollhook.set_hook(conn, job)
    error: BaseException | None = None
    try:
        _execute(cursor, sql)  # type: ignore[arg-type]  # psycopg2 checks the type itself
    except BaseException as exc:  # noqa: BLE001 (re-raised below, or replaced by the interrupt)
        error = exc
    finally:
        _pollhook.set_hook(conn, None)
    try:
        if job.interrupt is not None:
            # The COPY was stopped on the server (psycopg2 raised its QueryCanceled, or the
            # COPY had completed meanwhile): what interrupted it is what the caller sees.
            raise job.interrupt
        if error is not None:
            if job.read_error is not None and isinstance(error, psycopg2.Error):
                raise error from job.read_error
            raise error
    finally:
        error = job.interrupt = job.read_error = None  # no cycle through this frame


class _Job:
    """The data of one COPY, moved when psycopg2's wait reaches COPY state."""

    def __init__(
        self,
        file: object,
        size: int,
        waits: tuple[WaitFunc, WaitFunc],
        lib: CopyLibPQ,
        timeout: float | None,
    ) -> None:
        self.file = file
        self.size = size
        self.wait_read, self.wait_write = waits
        self.lib = lib
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.done = False
        self.interrupt: BaseException | None = None
        self.read_error: Exception | None = None

    def __call__(self, conn: Any) -> int:  # noqa: ANN401 (a psycopg2 connection)
        """The hook: run the COPY if the statement is in COPY state; the state to return."""
        if self.done:
            return POLL_OK
        lib = self.lib
        ptr = conn.pgconn_ptr
        # In COPY state libpq hands out a new COPY result on every call, and waits for nothing;
        # otherwise (a BEGIN before the COPY, a statement that failed) it has none left.
        res = lib.PQgetResult(ptr)
        if not res:
            return POLL_OK
        status = lib.PQresultStatus(res)
        lib.PQclear(res)
        if status not in (PGRES_COPY_IN, PGRES_COPY_OUT):
            return POLL_OK  # (replication's COPY BOTH: not ours to move)
        self.done = True
        blocking = not lib.PQisnonblocking(ptr)
        if blocking:
            lib.PQsetnonblocking(ptr, 1)  # a connection made before patching
        try:
            self.move(conn, ptr, status)
        finally:
            if blocking and conn.pgconn_ptr == ptr and not conn.closed:
                lib.PQsetnonblocking(ptr, 0)
        return int(_Connection.poll(conn))

    def move(self, conn: psycopg2.extensions.connection, ptr: int, status: int) -> None:
        """Move the data and end the COPY; on an interruption, abort it on the server."""
        copy = _copy_loop.Copy(
            conn, self.lib, ptr, self.wait_read, self.wait_write, None, in_callback=True
        )
        copy.deadline = self.deadline
        copy.busy = True
        try:
            if status == PGRES_COPY_IN:
                copy.phase = "in"
                copy.copy_in(getattr(self.file, "read"), self.size)  # noqa: B009 (psycopg2's error)
            else:
                copy.phase = "out"
                text = isinstance(self.file, io.TextIOBase)
                copy.copy_out(getattr(self.file, "write"), text)  # noqa: B009
            copy.busy = False
            self.read_error = copy.read_error
        except _copy_loop.Expired:
            # psycogreen's timeout: the statement is cancelled, and psycopg2 raises the
            # server's QueryCanceled, as for any statement that timed out. The wait goes on
            # for that answer past the deadline, which this COPY has reported and acted on.
            _pollhook.settling.add(id(conn))
            copy.stop()
        except BaseException as exc:  # noqa: BLE001 (re-raised by run(), after psycopg2's result)
            self.interrupt = exc
            # If this fails, its error leaves the wait, and psycopg2 closes the connection.
            copy.stop()
        finally:
            os.close(copy.fd)
