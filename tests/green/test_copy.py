# SPDX-License-Identifier: BSD-3-Clause
"""COPY under green mode: what every green backend does (once per scheduler).

Each scenario runs in a subprocess patched for the backend (``scenarios_copy.py``); data are
compared byte for byte with psycopg2's own COPY, run here in the unpatched test process.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_copy

# Slow, and independent of the Python version: one Python's environments run it.
pytestmark = [pytest.mark.postgres, pytest.mark.once]

FORMATS = {"text": "", "csv": "(FORMAT csv)", "binary": "(FORMAT binary)"}


@pytest.fixture
def table(conn: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh table name; every table starting with it is dropped afterwards."""
    name = f"copy_{os.getpid()}_{request.node.name}".lower()
    name = "".join(c if c.isalnum() else "_" for c in name)[:40]
    yield name
    cur = conn.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (name + "%",))
    for (found,) in cur.fetchall():
        cur.execute(f'DROP TABLE IF EXISTS "{found}"')


def _native_copy_to(conn: Any, sql: str) -> bytes:
    """psycopg2's own COPY TO, no wait callback: the reference."""
    sink = io.BytesIO()
    conn.cursor().copy_expert(sql, sink)
    return sink.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _plain_table(conn: Any, table: str) -> None:
    conn.cursor().execute(f"CREATE TABLE {table} (a int PRIMARY KEY, b text, c numeric)")


def test_roundtrip_every_format_byte_for_byte(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    """Text, CSV, binary; tabs, newlines, backslashes, quotes, non-ASCII, NULLs, bytea."""
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, "
        "CASE WHEN g % 7 = 0 THEN NULL ELSE E'tab\\there \\\\ \"q\" ''s'' é€😀 ' || g END AS b, "
        "CASE WHEN g % 11 = 0 THEN NULL ELSE E'line\\nbreak, comma' END AS c, "
        "g * 1.25 AS d, decode(md5(g::text), 'hex') AS e, "
        "ARRAY[g, g + 1] AS f FROM generate_series(1, 20000) g"
    )
    out = run_green(scheduler, scenarios_copy.roundtrip, table=table)
    for fmt, opts in FORMATS.items():
        reference = _native_copy_to(
            conn, f"COPY (SELECT * FROM {table} ORDER BY a) TO STDOUT {opts}"
        )
        copied_back = _native_copy_to(
            conn, f"COPY (SELECT * FROM {table}_{fmt} ORDER BY a) TO STDOUT {opts}"
        )
        assert out[fmt]["md5"] == _md5(reference), fmt
        assert out[fmt]["getcopydata_md5"] == _md5(reference), fmt
        assert _md5(copied_back) == _md5(reference), fmt
        assert out[fmt]["to"] == out[fmt]["from"] == 20000
    text = _native_copy_to(conn, f"COPY {table} TO STDOUT")
    assert out["text_sink_rows"] == 20000
    assert out["text_sink_md5"] == _md5(text)
    assert out["str_source_rows"] == 20000
    assert _native_copy_to(conn, f"COPY {table}_str TO STDOUT") == text
    assert out["gen_rows"] == 5000
    assert out["gen_reads"] == 10001  # two pieces a row, then the end
    assert out["gen_to_rows"] == 5000
    assert out["gen_to_head"].startswith("1|name 1\n2|name 2\n")
    assert out["composable"] == "5000\n"


def test_million_rows_each_way_keep_the_scheduler_running(
    scheduler: str, run_green: RunGreen, table: str
) -> None:
    """1M rows (about 50 MB) each way: a 10 ms heartbeat never stalls more than 50 ms.

    The 50 ms bound applies to the stall the COPY causes: the CPU time the process spent
    between two ticks. The wall-clock gap also counts time the (shared, 2-core) machine gave
    other processes; its bound only says the COPY never blocked the scheduler outright (a
    blocking COPY of these rows takes 0.3 s and more). ``bench/copying.py`` reports wall gaps.
    """
    out = run_green(scheduler, scenarios_copy.big, table=table, rows=1_000_000, timeout=180)
    for fmt in ("text", "binary"):
        facts = out[fmt]
        assert facts["to"] == facts["from"] == 1_000_000, facts
        assert facts["bytes"] > 40_000_000, facts
        assert facts["check"] == out["expected"], facts
        assert facts["to_cpu_gap"] < 0.05, facts
        assert facts["from_cpu_gap"] < 0.05, facts
        assert facts["to_gap"] < 0.25, facts
        assert facts["from_gap"] < 0.25, facts


def test_transactions_behave_as_psycopg2s_own_copy(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    _plain_table(conn, table)
    out = run_green(scheduler, scenarios_copy.transactions, table=table)
    assert out["copied"] == 1000
    assert out["status_after_copy"] is True
    assert out["visible_before_commit"] == 0
    assert out["after_rollback"] == 0
    assert out["after_commit"] == 1000
    assert out["isolation"] == "serializable"
    assert out["readonly"] == ["ReadOnlySqlTransaction", "25006"]
    assert out["joined_rollback"] == 1000
    assert out["autocommit"] == 1010
    assert out["to_in_tx"] == 0


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("how", ["timeout", "kill", "psycogreen", "set_timeout"])
def test_interrupted_copy_from_stops_on_the_server(  # noqa: PLR0917
    scheduler: str, run_green: RunGreen, conn: Any, table: str, how: str, autocommit: bool
) -> None:
    _plain_table(conn, table)
    out = run_green(
        scheduler,
        scenarios_copy.interrupted,
        table=table,
        direction="from",
        how=how,
        autocommit=autocommit,
    )
    expected = {
        "timeout": "Timeout",
        "kill": "GreenletExit",
        "psycogreen": "QueryCanceled:57014",
        "set_timeout": "QueryCanceled:57014",
    }
    assert out["result"] == expected[how], out
    assert out["elapsed"] < 1.0, out  # interrupted at 0.3 s
    assert out["source_reads"] > 100, out  # it was mid-COPY
    assert out["closed"] == 0, out
    idle = "idle" if autocommit else "idle in transaction (aborted)"
    assert out["server_state"] == idle, out
    assert out["server_state_after_rollback"] == "idle", out
    assert out["after"] == 42
    assert out["rows_committed"] == 0


@pytest.mark.parametrize("how", ["timeout", "kill", "psycogreen", "set_timeout"])
def test_interrupted_copy_to_stops_on_the_server(
    scheduler: str, run_green: RunGreen, conn: Any, table: str, how: str
) -> None:
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 300000) g"
    )
    out = run_green(
        scheduler,
        scenarios_copy.interrupted,
        table=table,
        direction="to",
        how=how,
        autocommit=False,
    )
    expected = {
        "timeout": "Timeout",
        "kill": "GreenletExit",
        "psycogreen": "QueryCanceled:57014",
        "set_timeout": "QueryCanceled:57014",
    }
    assert out["result"] == expected[how], out
    assert out["elapsed"] < 1.0, out
    assert out["sink_writes"] > 10, out
    assert out["closed"] == 0, out
    assert out["server_state"] in {"idle in transaction", "idle in transaction (aborted)"}, out
    assert out["server_state_after_rollback"] == "idle", out
    assert out["after"] == 42


def test_server_errors_mid_copy(scheduler: str, run_green: RunGreen, conn: Any, table: str) -> None:
    _plain_table(conn, table)
    out = run_green(scheduler, scenarios_copy.server_errors, table=table)
    name, code, text, pgerror, closed, after = out["bad_row"]
    assert (name, code, closed, after) == ("InvalidTextRepresentation", "22P02", 0, 1)
    assert 'invalid input syntax for type integer: "oops"' in text
    assert "line 5001" in text
    assert pgerror == "ERROR:  " + text  # psycopg2 strips the severity from str(), not pgerror
    name, code, text, _, closed, after = out["unique"]
    assert (name, code, closed, after) == ("UniqueViolation", "23505", 0, 1)
    assert "duplicate key value violates unique constraint" in text
    name, code, text, _, closed, after = out["to_mid_stream"]
    assert (name, code, closed, after) == ("DivisionByZero", "22012", 0, 1)
    assert 0 < out["to_rows_before_error"] < 30000
    name, code, text, _, closed, after = out["syntax"]
    assert (name, code, after) == ("UndefinedTable", "42P01", 1)
    name, code, _, _, _, after = out["in_failed_tx"]
    assert (name, code, after) == ("InFailedSqlTransaction", "25P02", 1)
    assert out["source_error"] == [
        "COPY from stdin failed: error in .read() call: ValueError source broke",
        "ValueError('source broke')",
        0,
    ]
    assert out["rows_at_end"] == 0


@pytest.mark.parametrize("direction", ["from", "to", "to_waiting"])
def test_connection_closed_by_another_task(
    scheduler: str, run_green: RunGreen, conn: Any, table: str, direction: str
) -> None:
    """A connection of psycopg2's own class (not from psycopg2.connect()) closes under the COPY."""
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b, 1.5 AS c "
        "FROM generate_series(1, 100000) g"
    )
    if direction == "from":
        conn.cursor().execute(f"TRUNCATE {table}")
    out = run_green(
        scheduler, scenarios_copy.closed_mid_copy, table=table, direction=direction, guarded=False
    )
    assert out["closer"] == "closed", out
    assert out["result"] == "InterfaceError:connection already closed", out
    assert out["closed"] != 0
    assert out["after_close"] < 1.0, out
    assert out["other"] == 7


def test_guarded_connection_refuses_close_during_copy(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    """psycopg2.connect() once patched: close() from another task is refused, COPY completes."""
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b, 1.5 AS c "
        "FROM generate_series(1, 100000) g"
    )
    out = run_green(
        scheduler, scenarios_copy.closed_mid_copy, table=table, direction="to", guarded=True
    )
    assert out["closer"] == "ConnectionBusyError:8", out
    assert out["result"] == "finished", out
    assert out["closed"] == 0


@pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
def test_another_tasks_query_on_the_connection(
    scheduler: str, run_green: RunGreen, conn: Any, table: str, guarded: bool
) -> None:
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 100000) g"
    )
    out = run_green(scheduler, scenarios_copy.same_connection, table=table, guarded=guarded)
    assert out["copied"] == out["expected"] == out["bytes_ok"] == 100000, out
    assert out["closed"] == 0
    execute, commit, copy = out["intruder"]
    if guarded:
        assert execute.startswith("ConnectionBusyError:execute() cannot run now"), out
        assert commit.startswith("ConnectionBusyError:commit() cannot run now"), out
        assert copy.startswith("ConnectionBusyError:COPY cannot run now"), out
    else:  # psycopg2's own classes: libpq's error; a second COPY is refused by core itself
        assert "another command is already in progress" in execute, out
        assert copy.startswith("ConnectionBusyError:COPY cannot run now"), out


def test_copy_methods_by_name_on_patched_connect(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    _plain_table(conn, table)
    out = run_green(scheduler, scenarios_copy.by_name, table=table)
    assert "CopyCursorMixin" in out["cursor_class"], out
    assert out["default"] == [10, 10, 10]
    assert out["dict"] == [10, 20, 20]
    assert out["realdict"] == [10, 30, 30]


def test_refuses_where_it_cannot_be_cooperative(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_copy.refusals)
    assert "not psycogreen's" in out["foreign"], out
    assert "cannot run cooperatively under refusing: its waits cannot" in out["refusing"], out
    assert "PQnoSuchFunction" in out["missing_symbol"], out
    assert out["works_again"] == "1\n"
    assert out["named"] == "copy_expert cannot be used with a named cursor"
    assert out["closed_cursor"] == "cursor already closed"


def test_without_callback_and_connections_made_before_patching(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    _plain_table(conn, table)
    out = run_green(scheduler, scenarios_copy.without_callback_and_old_connections, table=table)
    assert out["native_from"] == 100
    assert out["native_core_to"] == 100
    assert out["nonblocking_before"] == 0
    assert out["green_to"] == 100
    assert out["green_from"] == 100
    assert out["nonblocking_after"] == 0
    assert out["count"] == 200


@pytest.mark.parametrize("direction", ["from", "to"])
def test_unreachable_server_ends_with_the_connection_closed(
    scheduler: str, run_green: RunGreen, conn: Any, table: str, direction: str
) -> None:
    """The server stops answering mid-COPY: after the Timeout, the COPY cannot be stopped on
    the server within the cancel timeout (0.5 s here), so the connection is closed."""
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b, 1.5 AS c "
        "FROM generate_series(1, 100000) g"
    )
    if direction == "from":
        conn.cursor().execute(f"TRUNCATE {table}")
    out = run_green(scheduler, scenarios_copy.unreachable, table=table, direction=direction)
    assert out["result"] == "Timeout", out
    assert out["closed"] != 0, out
    assert out["elapsed"] < 2.5, out  # Timeout at 0.6 s, then at most 0.5 s (and a slice)
    assert out["server_state"] == "gone", out
    if direction == "from":
        assert out["rows_committed"] == 0


@pytest.mark.parametrize("direction", ["from", "to"])
def test_backend_terminated_mid_copy(
    scheduler: str, run_green: RunGreen, conn: Any, table: str, direction: str
) -> None:
    """The server ends the session mid-COPY: a psycopg2 error, and the connection is closed,
    not left half-alive."""
    conn.cursor().execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b, 1.5 AS c "
        "FROM generate_series(1, 200000) g"
    )
    if direction == "from":
        conn.cursor().execute(f"TRUNCATE {table}")
    out = run_green(scheduler, scenarios_copy.terminated, table=table, direction=direction)
    assert out["result"].split(":")[0] in {"OperationalError", "AdminShutdown"}, out
    assert out["closed"] != 0, out
