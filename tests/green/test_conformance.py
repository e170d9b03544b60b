# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2 as a program knows it, once patched, under every green backend (once per scheduler).

Each scenario (``scenarios_conformance.py``) runs
patched and unpatched; what the program observes must be the same, except where a test says
what differs, and why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_conformance

# Slow, and independent of the Python version: one Python's environments run it.
pytestmark = [pytest.mark.postgres, pytest.mark.once]


@pytest.fixture
def table(conn: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh table name; every table starting with it is dropped afterwards."""
    name = f"conf_{os.getpid()}_{request.node.name}".lower()
    name = "".join(c if c.isalnum() else "_" for c in name)[:40]
    yield name
    cur = conn.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE tablename ILIKE %s", (name + "%",))
    for (found,) in cur.fetchall():
        cur.execute(f'DROP TABLE IF EXISTS "{found}"')


def _both(
    run_green: RunGreen, scheduler: str, scenario: Callable[..., Any], **kwargs: Any
) -> tuple[Any, Any]:
    """The scenario's observations unpatched (psycopg2 itself), then patched."""
    return run_green("none", scenario, **kwargs), run_green(scheduler, scenario, **kwargs)


def _dropping(conn: Any, table: str) -> None:
    cur = conn.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE tablename ILIKE %s", (table + "%",))
    for (found,) in cur.fetchall():
        cur.execute(f'DROP TABLE "{found}"')


def test_copy_quotes_identifiers_as_psycopg2(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    plain = run_green("none", scenarios_conformance.copy_identifiers, table=table)
    _dropping(conn, table)
    patched = run_green(scheduler, scenarios_conformance.copy_identifiers, table=table)
    assert plain["from_query"].startswith(f'COPY "{table}_MixedCase"("select","Col") FROM stdin')
    assert plain["to_data"] == "1|one\n2|two\n"
    assert plain["dotted"]["type"] == "UndefinedTable"
    assert plain["table_bytes"] == plain["table_int"] == "TypeError"
    assert patched == plain


def test_copy_sets_rowcount_and_query_and_returns_none(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    plain = run_green("none", scenarios_conformance.copy_cursor_state, table=table)
    _dropping(conn, table)
    patched = run_green(scheduler, scenarios_conformance.copy_cursor_state, table=table)
    assert plain["from_returns"] == plain["to_returns"] == plain["expert_returns"] == "None"
    assert plain["from"][0] == plain["to"][0] == plain["expert"][0] == 3
    assert plain["failed"][:2] == ["UniqueViolation", -1]
    assert plain["core_from"] == 2
    assert plain["core_to"] == 5
    assert patched == plain


def test_copy_errors_are_psycopg2s(
    scheduler: str, run_green: RunGreen, conn: Any, table: str
) -> None:
    plain = run_green("none", scenarios_conformance.copy_errors, table=table)
    _dropping(conn, table)
    patched = run_green(scheduler, scenarios_conformance.copy_errors, table=table)
    missing = plain["missing_table"]
    assert missing["sqlstate"] == missing["pgcode"] == "42P01", missing
    assert missing["str"].startswith(f'relation "{table}_missing" does not exist'), missing
    assert missing["pgerror"] == "ERROR:  " + missing["str"]
    assert missing["cursor_is_ours"] is True
    read = plain["read_raises"]
    assert read["type"] == "QueryCanceled", read
    assert read["str"].startswith(
        "COPY from stdin failed: error in .read() call: ZeroDivisionError division by zero"
    )
    assert read["is_psycopg2_error"] is True
    assert plain["read_not_bytes"]["str"].startswith(
        "COPY from stdin failed: error in .read() call\n"
    )
    assert plain["rows"] == 0
    assert patched == plain


def test_read_error_is_the_cause(scheduler: str, run_green: RunGreen, table: str) -> None:
    """What psycogreen adds: the exception read() raised, as the QueryCanceled's __cause__."""
    out = run_green(scheduler, scenarios_conformance.copy_read_error_cause, table=table)
    assert out["cause"] == "ZeroDivisionError('division by zero')", out


def test_dsn_is_what_the_program_passed(scheduler: str, run_green: RunGreen) -> None:
    plain, patched = _both(run_green, scheduler, scenarios_conformance.connection_dsn)
    assert plain["hosts"][0].startswith("host=127.0.0.2,localhost "), plain
    assert "password=xxx" in plain["password"][0]
    assert "password=xxx" in plain["uri"][0]
    assert all(reconnected for _, reconnected, _ in plain.values())
    assert (
        plain["name"][2] == f"<connection object at <addr>; dsn: '{plain['name'][0]}', closed: 0>"
    )
    assert patched == plain


def test_cancel_while_connecting_is_refused(scheduler: str, run_green: RunGreen) -> None:
    plain, patched = _both(run_green, scheduler, scenarios_conformance.cancel_while_connecting)
    assert plain["connecting"]["type"] == "OperationalError"
    assert plain["connecting"]["str"] == "asynchronous connection attempt underway"
    assert plain["connected"] == "None"
    assert patched == plain


def test_connection_factory_returning_none(scheduler: str, run_green: RunGreen) -> None:
    plain, patched = _both(run_green, scheduler, scenarios_conformance.factory_returning_none)
    assert plain == {"result": "None", "calls": 1}
    assert patched == plain
