# SPDX-License-Identifier: BSD-3-Clause
"""The queries a green large object runs, and the client files moved through them.

Each operation is one query run by psycopg2's ``execute()`` on a guarded cursor, so it waits
through the wait callback and is refused with ``ConnectionBusyError`` while another greenlet
uses the connection. ``lo_import`` and ``lo_export`` are libpq's client-side functions
(``fe-lobj.c``), redone here with the server's functions, :data:`CHUNK` bytes per query, and
libpq's messages.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection

from psycogreen.core._busy import refuse
from psycogreen.core._lobject_args import INV_READ, INV_WRITE

__all__ = ["CHUNK", "export_file", "import_file", "lo64", "query"]

#: Bytes read or written per query.
CHUNK = 1 << 20
# The 64-bit large-object functions (lo_lseek64, lo_tell64, lo_truncate64) exist since 9.3.
LO64_SINCE = 90300


def query(conn: connection, sql: str, args: tuple[object, ...]) -> Any:  # noqa: ANN401 (a row value)
    """The one value of ``sql``, run by psycopg2 (through the wait callback) on ``conn``.

    A server error of a large-object function is an ``OperationalError`` with the server's
    message, as psycopg2 raises libpq's (``pq_complete_error``), except ``QueryCanceled``:
    what psycogreen's timeouts raise (it is an ``OperationalError`` too). psycopg2's own
    errors (a closed connection, a busy one) propagate unchanged.
    """
    refuse(conn, "a large-object operation")  # another greenlet's query in flight: say so
    cursor = psycopg2.extensions.cursor(conn)
    try:
        cursor.execute(sql, args)
        row = cursor.fetchone()
        assert row is not None  # an aggregate-free SELECT of one function: one row always
        return row[0]
    except psycopg2.Error as exc:
        if exc.pgcode is None or isinstance(exc, psycopg2.extensions.QueryCanceledError):
            raise
        raise psycopg2.OperationalError(exc.pgerror) from exc
    finally:
        cursor.close()


def lo64(conn: connection, name: str, *args: int) -> int:
    """``lo_<name>64(args)``, or ``lo_<name>`` on a server older than 9.3 (as psycopg2)."""
    function = f"lo_{name}64" if conn.server_version >= LO64_SINCE else f"lo_{name}"
    placeholders = ", ".join(["%s"] * len(args))
    return int(query(conn, f"SELECT {function}({placeholders})", args))


def export_file(conn: connection, oid: int, filename: str) -> None:
    """Libpq's ``lo_export``: open the object, then the file, then copy."""
    fd = query(conn, "SELECT lo_open(%s::oid, %s)", (oid, INV_READ))
    try:
        target = os.open(filename, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o666)
    except OSError as exc:
        query(conn, "SELECT lo_close(%s)", (fd,))
        message = f'could not open file "{filename}": {exc.strerror}\n'
        raise psycopg2.OperationalError(message) from exc
    try:
        while True:
            data = bytes(query(conn, "SELECT loread(%s, %s)", (fd, CHUNK)))
            if data:
                _write_all(target, data, filename)
            if len(data) < CHUNK:
                break
    finally:
        os.close(target)
    query(conn, "SELECT lo_close(%s)", (fd,))


def import_file(conn: connection, filename: str) -> int:
    """Libpq's ``lo_import``: a new object holding the client's file ``filename``; its oid."""
    try:
        source = os.open(filename, os.O_RDONLY)
    except OSError as exc:
        message = f'could not open file "{filename}": {exc.strerror}\n'
        raise psycopg2.OperationalError(message) from exc
    try:
        oid = query(conn, "SELECT lo_creat(%s)", (INV_READ | INV_WRITE,))
        fd = query(conn, "SELECT lo_open(%s::oid, %s)", (oid, INV_WRITE))
        while True:
            try:
                data = os.read(source, CHUNK)
            except OSError as exc:
                message = f'could not read from file "{filename}": {exc.strerror}\n'
                raise psycopg2.OperationalError(message) from exc
            if not data:
                break
            query(conn, "SELECT lowrite(%s, %s)", (fd, data))
        query(conn, "SELECT lo_close(%s)", (fd,))
    finally:
        os.close(source)
    return int(oid)


def _write_all(fd: int, data: bytes, filename: str) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            message = f'could not write to file "{filename}": {exc.strerror}\n'
            raise psycopg2.OperationalError(message) from exc
        view = view[written:]
