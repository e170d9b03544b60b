# SPDX-License-Identifier: BSD-3-Clause
"""What core reproduces of psycopg2, checked against psycopg2 itself (no wait callback here).

The statement of ``copy_from``/``copy_to``, the CopyFail message of a failed ``read()``, and
``conn.dsn``: each is built by core the way psycopg2's C code builds it, and compared with
what psycopg2 produces for the same input.
"""

from __future__ import annotations

import io
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from psycogreen.core import _bytesfill, _copy, _copy_loop, _dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
def tx(conn: Any) -> Any:
    """The ``conn`` fixture's connection, in a transaction rolled back afterwards."""
    conn.autocommit = False
    try:
        yield conn
    finally:
        conn.rollback()
        conn.autocommit = True


TABLES = ["MixedCase", 'with "quotes"', "select", "dotted.name", "ünïcode"]
COLUMNS = [None, ["select", "Mixed"], ['a"b'], ("x",)]


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("columns", COLUMNS)
@pytest.mark.parametrize(("sep", "null"), [("\t", "\\N"), ("|", "NULL"), (",", "it's")])
def test_copy_statement_is_psycopg2s(
    tx: Any, table: str, columns: Any, sep: str, null: str
) -> None:
    cur = tx.cursor()
    names = columns or ["a"]
    cur.execute(
        "CREATE TEMP TABLE {} ({})".format(
            psycopg2.extensions.quote_ident(table, cur),
            ", ".join(f"{psycopg2.extensions.quote_ident(n, cur)} text" for n in names),
        )
    )
    for method in ("copy_to", "copy_from"):
        if method == "copy_to":
            cur.copy_to(io.StringIO(), table, sep=sep, null=null, columns=columns)
        else:
            cur.copy_from(io.StringIO(""), table, sep=sep, null=null, columns=columns)
        assert _copy._copy_statement(tx, method, table, sep, null, columns) == cur.query


def test_empty_column_list_is_psycopg2s(tx: Any) -> None:
    cur = tx.cursor()
    cur.execute("CREATE TEMP TABLE t (a int)")
    with pytest.raises(psycopg2.errors.SyntaxError):
        cur.copy_to(io.StringIO(), "t", columns=[])
    assert _copy._copy_statement(tx, "copy_to", "t", "\t", "\\N", []) == cur.query


def test_copy_statement_argument_types(tx: Any) -> None:
    with pytest.raises(TypeError):
        tx.cursor().copy_to(io.StringIO(), b"t")
    with pytest.raises(TypeError, match="argument 'table' must be str, not bytes"):
        _copy._copy_statement(tx, "copy_to", b"t", "\t", "\\N", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embedded null character"):
        _copy._copy_statement(tx, "copy_to", "t\0", "\t", "\\N", None)


class _Plain(Exception):
    pass


class _Outer:
    class Inner(Exception):
        pass


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError


@pytest.mark.parametrize(
    "exc",
    [
        ZeroDivisionError("division by zero"),
        _Plain("plain"),
        _Outer.Inner("nested"),
        psycopg2.errors.DivisionByZero("from an extension"),
        _Plain("é" + "x" * 2000),  # longer than psycopg2's buffer
        _Plain("before\0after"),
        _BadStr(),
    ],
    ids=["builtin", "python", "nested", "extension", "long", "nul", "unprintable"],
)
def test_read_failure_message_is_psycopg2s(tx: Any, exc: BaseException) -> None:
    """psycopg2 sends the CopyFail message; the server echoes it: ours must be the same."""

    class Source(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:  # noqa: ARG002
            raise exc

    cur = tx.cursor()
    cur.execute("CREATE TEMP TABLE t (a int)")
    cur.execute("SAVEPOINT s")
    try:
        cur.copy_from(Source(), "t")
    except psycopg2.Error as error:
        primary = error.diag.message_primary
    cur.execute("ROLLBACK TO SAVEPOINT s")
    prefix = "COPY from stdin failed: "
    assert primary.startswith(prefix), primary
    ours = _copy_loop._read_failure(exc)
    assert primary[len(prefix) :] == ours.decode(), (primary, ours)


@pytest.mark.parametrize(
    ("given", "kwargs"),
    [
        ("host=127.0.0.1 dbname=postgres user=postgres", {}),
        ("dbname=postgres host=127.0.0.1 password=secret user=postgres", {}),
        ("host=127.0.0.1", {"user": "postgres", "password": "p w'x", "dbname": "postgres"}),
        ("postgresql://postgres:secret@127.0.0.1/postgres?application_name=a%20b", {}),
        ("postgresql://postgres@127.0.0.1/postgres", {}),
        ("", {"host": "127.0.0.1", "user": "postgres", "dbname": "postgres", "password": ""}),
    ],
)
def test_dsn_is_psycopg2s(dsn: str, given: str, kwargs: dict[str, Any]) -> None:
    """conn.dsn as psycopg2 reports it: core's copy for a connection made host by host."""
    port = psycopg2.extensions.parse_dsn(dsn).get("port", "5432")
    if given.startswith("postgresql://"):
        given = given.replace("127.0.0.1/", f"127.0.0.1:{port}/")
    else:
        kwargs = {**kwargs, "port": port}
    conn = psycopg2.connect(given, **kwargs)  # psycopg2's own: no callback installed
    try:
        full = psycopg2.extensions.make_dsn(given, **kwargs)
        assert _dsn.obscured(full) == conn.dsn
    finally:
        conn.close()


def test_bytes_filler() -> None:
    filler = _bytesfill.Filler(10)
    filler.add(b"0123")
    filler.add(b"456789")
    data = filler.result()
    assert data == b"0123456789"
    assert type(data) is bytes
    assert hash(data) == hash(b"0123456789")
    short = _bytesfill.Filler(10)
    short.add(b"abc")
    assert short.result() == b"abc"
    full = _bytesfill.Filler(2)
    with pytest.raises(ValueError, match="do not fit"):
        full.add(b"abc")
    assert _bytesfill.Filler(0).result() == b""
