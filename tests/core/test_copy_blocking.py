# SPDX-License-Identifier: BSD-3-Clause
"""COPY under core's scheduler-free callback (``patch_psycopg("blocking")``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunGreen

pytestmark = pytest.mark.postgres


def test_copy_and_ctrl_c(run_green: RunGreen, conn: Any) -> None:
    """COPY runs under the blocking callback; a SIGINT mid-COPY FROM propagates once the COPY
    was stopped on the server: nothing committed, the connection kept."""
    table = "copy_blocking_ctrl_c"
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (a int, b text, c numeric)")
    try:
        out = run_green("none", "scenarios_copy:blocking_copy", table=table)
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    assert out["from"] == out["to"] == 1000
    assert out["bytes"] > 10_000
    assert out["interrupted"] == "KeyboardInterrupt", out
    assert out["elapsed"] < 1.3, out  # SIGINT at 0.3 s
    assert out["closed"] == 0
    assert out["rows_committed"] == 0
