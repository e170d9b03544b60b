# SPDX-License-Identifier: BSD-3-Clause
"""What a program sees of psycopg2, patched or not: scenarios run both ways and compared.

Each scenario runs in a subprocess (``green.py``): patched for the backend under test, or with
the scheduler ``none``, where nothing is patched and psycopg2 is itself. The test compares the
two results, which hold only JSON-able observations (types, messages, attributes).
"""

from __future__ import annotations

import importlib
import io
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from psycogreen import core
from tests.support.green import Scheduler


def _patch(sched: Scheduler) -> None:
    if sched.name != "none":
        importlib.import_module(f"psycogreen.{sched.name}").patch_psycopg()


def _error(exc: BaseException) -> dict[str, Any]:
    """What a program can see of an exception."""
    diag = getattr(exc, "diag", None)
    return {
        "type": type(exc).__name__,
        "str": str(exc),
        "pgerror": getattr(exc, "pgerror", None),
        "pgcode": getattr(exc, "pgcode", None),
        "sqlstate": diag.sqlstate if diag is not None else None,
        "message_primary": diag.message_primary if diag is not None else None,
        "is_psycopg2_error": isinstance(exc, psycopg2.Error),
    }


def copy_identifiers(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """copy_from/copy_to quote the table and the columns: mixed case, dots, keywords."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    mixed = f"{table}_MixedCase"
    cur.execute(f'CREATE TABLE "{mixed}" ("select" int, "Col" text)')
    cur.execute(f"CREATE TABLE {table}_plain (a int)")
    out: dict[str, Any] = {}
    cur.copy_from(io.StringIO("1\tone\n2\ttwo\n"), mixed, columns=["select", "Col"])
    out["from_query"] = cur.query.decode()
    sink = io.StringIO()
    cur.copy_to(sink, mixed, sep="|", null="-")
    out["to_query"] = cur.query.decode()
    out["to_data"] = sink.getvalue()
    conn.commit()
    # A dotted name is one identifier, as in psycopg2 >= 2.9: no such table.
    try:
        cur.copy_from(io.StringIO("1\n"), f"public.{table}_plain")
        out["dotted"] = "no error"
    except psycopg2.Error as exc:
        out["dotted"] = _error(exc)
    conn.rollback()
    for bad in (b"bytes", 42):
        try:
            cur.copy_to(io.StringIO(), bad)  # type: ignore[arg-type]
            out[f"table_{type(bad).__name__}"] = "no error"
        except TypeError:
            out[f"table_{type(bad).__name__}"] = "TypeError"
    conn.close()
    return out


def copy_cursor_state(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """cursor.rowcount and cursor.query after COPY; the methods return None."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (a int PRIMARY KEY, b text)")
    conn.commit()
    out: dict[str, Any] = {}
    out["from_returns"] = repr(cur.copy_from(io.StringIO("1\ta\n2\tb\n3\tc\n"), table))
    out["from"] = [cur.rowcount, cur.query.decode()]
    out["to_returns"] = repr(cur.copy_to(io.StringIO(), table))
    out["to"] = [cur.rowcount, cur.query.decode()]
    out["expert_returns"] = repr(cur.copy_expert(f"COPY {table} TO STDOUT", io.BytesIO()))
    out["expert"] = [cur.rowcount, cur.query.decode()]
    conn.commit()
    cur.execute(f"INSERT INTO {table} VALUES (10, 'x')")
    try:
        cur.copy_from(io.StringIO("1\tdup\n"), table)
    except psycopg2.Error as exc:
        out["failed"] = [type(exc).__name__, cur.rowcount, cur.query.decode()]
    conn.rollback()
    # The module-level functions return the row count (psycogreen's API), also unpatched.
    out["core_from"] = core.copy_from(cur, io.StringIO("4\td\n5\te\n"), table)
    out["core_to"] = core.copy_expert(cur, f"COPY {table} TO STDOUT", io.BytesIO())
    out["core_rowcount"] = cur.rowcount
    conn.rollback()
    conn.close()
    return out


class _BrokenRead(io.TextIOBase):
    def read(self, size: int = -1) -> str:  # noqa: ARG002
        return str(1 / 0)


class _NotBytes:
    def read(self, size: int = -1) -> int:  # noqa: ARG002
        return 42


def copy_errors(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Server errors with their diagnostics; a read() that raises or returns no bytes."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (a int)")
    conn.commit()
    out: dict[str, Any] = {}
    attempts = {
        "missing_table": lambda: cur.copy_to(io.StringIO(), f"{table}_missing"),
        "bad_data": lambda: cur.copy_from(io.StringIO("1\nzz\n"), table),
        "syntax": lambda: cur.copy_expert("COPY nonsense nonsense", io.BytesIO()),
        "read_raises": lambda: cur.copy_from(_BrokenRead(), table),
        "read_not_bytes": lambda: cur.copy_from(_NotBytes(), table),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            out[name] = "no error"
        except Exception as exc:
            out[name] = _error(exc)
            out[name]["cursor_is_ours"] = getattr(exc, "cursor", None) is cur
            out[name]["rowcount"] = cur.rowcount
        conn.rollback()
    cur.execute(f"SELECT count(*) FROM {table}")
    out["rows"] = cur.fetchone()[0]
    out["closed"] = conn.closed
    conn.close()
    return out


def copy_read_error_cause(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Under psycogreen the exception read() raised is the QueryCanceled's ``__cause__``."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (a int)")
    out: dict[str, Any] = {}
    try:
        cur.copy_from(_BrokenRead(), table)
    except psycopg2.errors.QueryCanceled as exc:
        out["cause"] = repr(exc.__cause__)
    conn.close()
    return out


def connection_dsn(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """conn.dsn for what the program passed: names, several hosts, keywords, a password."""
    _patch(sched)
    params = psycopg2.extensions.parse_dsn(dsn)
    port = params.get("port", "5432")
    user = params.get("user", "postgres")
    db = params.get("dbname", "postgres")
    out: dict[str, Any] = {}
    # 127.0.0.2 refuses (nothing listens there): libpq and psycogreen both go on to the next.
    cases = {
        "name": (f"dbname={db} host=localhost port={port} user={user}", {}),
        "hosts": (f"host=127.0.0.2,localhost port={port} dbname={db} user={user}", {}),
        "password": (f"host=localhost port={port} user={user} password=secret dbname={db}", {}),
        "keywords": (f"host=localhost port={port}", {"user": user, "dbname": db, "password": "s"}),
        "uri": (f"postgresql://{user}:pw@localhost:{port}/{db}?application_name=x", {}),
    }
    for name, (given, kwargs) in cases.items():
        conn = psycopg2.connect(given, **kwargs)
        again = psycopg2.connect(conn.dsn.replace("xxx", "secret"))  # a pool's reconnect
        shown = repr(conn).replace(hex(id(conn)), "<addr>")
        out[name] = [conn.dsn, again.get_backend_pid() != conn.get_backend_pid(), shown]
        again.close()
        conn.close()
    return out


def cancel_while_connecting(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """cancel() during an asynchronous connection attempt is refused, as by psycopg2."""
    import select

    _patch(sched)
    out: dict[str, Any] = {}
    conn = psycopg2.connect(dsn, async_=True)
    try:
        conn.cancel()
        out["connecting"] = "no error"
    except psycopg2.Error as exc:
        out["connecting"] = _error(exc)
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            break
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            select.select([fd], [], [], 5)
        else:
            select.select([], [fd], [], 5)
    out["connected"] = repr(conn.cancel())  # nothing runs: the server ignores it
    conn.close()
    return out


def factory_returning_none(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A connection_factory returning None: connect() returns None."""
    _patch(sched)
    seen: list[str] = []

    def factory(dsn: str, *args: Any, **kwargs: Any) -> None:
        seen.append(dsn)

    result = psycopg2.connect(dsn, connection_factory=factory)
    return {"result": repr(result), "calls": len(seen)}
