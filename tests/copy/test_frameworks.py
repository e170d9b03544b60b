# SPDX-License-Identifier: BSD-3-Clause
"""COPY by name through Django's and SQLAlchemy's raw connections, on gevent and eventlet.

Run by ``hatch run copy:test`` (which has Django and SQLAlchemy, and psycopg2 built against
the system libpq); elsewhere the frameworks are missing and these tests skip (fail under CI).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_copy
from tests.support.env import require

pytestmark = pytest.mark.postgres

SCHEDULERS = ["gevent", "eventlet"]


@pytest.fixture
def table(conn: Any) -> Any:
    name = "copy_frameworks"
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"CREATE TABLE {name} (a int PRIMARY KEY, b text, c numeric)")
    yield name
    cur.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_django_cursor(run_green: RunGreen, table: str, scheduler: str) -> None:
    require(scheduler)
    require("django")
    out = run_green(scheduler, scenarios_copy.django_raw, table=table)
    assert out["psycopg2"] is True, out  # not psycopg 3
    assert out["from"] == out["expert"] == out["count"] == 1000, out
    assert out["bytes"] > 10_000


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_sqlalchemy_raw_connection(run_green: RunGreen, table: str, scheduler: str) -> None:
    require(scheduler)
    require("sqlalchemy")
    out = run_green(scheduler, scenarios_copy.sqlalchemy_raw, table=table)
    assert out["from"] == out["to"] == out["count"] == 1000, out
    assert out["bytes"] > 10_000
