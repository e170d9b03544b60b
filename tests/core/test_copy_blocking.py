# SPDX-License-Identifier: BSD-3-Clause
"""COPY under core's scheduler-free callback (``patch_psycopg("blocking")``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_copy

pytestmark = pytest.mark.postgres


def test_copy_and_ctrl_c(run_green: RunGreen, conn: Any) -> None:
    """COPY runs under the blocking callback; a SIGINT mid-COPY FROM propagates once the COPY
    was stopped on the server: nothing committed, the connection kept."""
    table = "copy_blocking_ctrl_c"
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (a int, b text, c numeric)")
    try:
        out = run_green("none", scenarios_copy.blocking_copy, table=table)
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    assert out["from"] == out["to"] == 1000
    assert out["bytes"] > 10_000
    assert out["interrupted"] == "KeyboardInterrupt", out
    # SIGINT at 0.3 s; stopping the COPY is bounded by the cancel timeout (2 s by default)
    assert out["elapsed"] < 2.3, out
    assert out["closed"] == 0
    assert out["rows_committed"] == 0


_GLOBAL_LIBPQ = """
import ctypes, io, json, sys
try:
    ctypes.CDLL("libpq.so.5", mode=ctypes.RTLD_GLOBAL)  # before psycopg2: its calls bind to it
except OSError as exc:
    print(json.dumps({"missing": str(exc)}))
    sys.exit(0)
import importlib.metadata
import psycopg2
import psycogreen.core as core
try:
    importlib.metadata.distribution("psycopg2-binary")
    binary = True
except importlib.metadata.PackageNotFoundError:
    binary = False
core.patch_psycopg("blocking")
conn = psycopg2.connect(sys.argv[1])
out = {"binary": binary, "error": None, "rows": None}
try:
    out["rows"] = core.copy_expert(conn.cursor(), "COPY (SELECT 1) TO STDOUT", io.BytesIO())
except core.CopyUnavailableError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_refuses_a_libpq_psycopg2_may_not_call(dsn: str) -> None:
    """A libpq in the process's global symbol scope takes psycopg2's calls: COPY must use that
    one. psycopg2-binary's bundled libpq is then not it, and COPY is refused; a psycopg2 built
    against the system libpq is linked to that very library, and COPY works."""
    from tests.support.child import run_json
    from tests.support.env import missing

    out = run_json(["-c", _GLOBAL_LIBPQ, dsn], timeout=60)
    if "missing" in out:
        missing(f"no system libpq to load: {out['missing']}")
    if out["binary"]:
        assert out["rows"] is None, out
        assert "another libpq is loaded in the process's global symbol scope" in out["error"]
    else:
        assert out == {"binary": False, "error": None, "rows": 1}, out
