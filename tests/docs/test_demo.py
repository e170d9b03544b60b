# SPDX-License-Identifier: BSD-3-Clause
"""The demo (``hatch run demo:run``, the README's first command) runs and shows what it claims.

A small run against the test server: 10 clients whose first query sleeps 0.3 s on the server.
One after the other (blocking, and gevent without psycogreen) that is at least 3 s; with
psycogreen the sleeps overlap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import require

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 10
SLEEP = 0.3

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for module in ("gevent", "eventlet", "psycogreen.gevent", "psycogreen.eventlet"):
        require(module)
    out = tmp_path_factory.mktemp("demo") / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "run.py"),
            "--dsn",
            dsn,
            "--clients",
            str(CLIENTS),
            "--queries",
            "4",
            "--sleep",
            str(SLEEP),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    document = json.loads(out.read_text())
    document["stdout"] = proc.stdout
    return document


def by_mode(demo: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["mode"]: r for r in demo["results"]}


def test_every_mode_ran_every_query(demo: dict[str, Any]) -> None:
    results = by_mode(demo)
    assert set(results) == {"blocking", "threads", "gevent", "eventlet", "gevent-unpatched"}
    for mode, r in results.items():
        assert r["errors"] == 0, (mode, r["first_error"])
        assert r["queries"] == CLIENTS * 4, mode


def test_concurrency_where_promised(demo: dict[str, Any]) -> None:
    results = by_mode(demo)
    # One at a time: no scheduler, or a hub that psycopg2 blocks.
    assert results["blocking"]["peak_in_flight"] == 1
    assert results["gevent-unpatched"]["peak_in_flight"] == 1
    assert results["blocking"]["wall"] >= CLIENTS * SLEEP
    assert results["gevent-unpatched"]["wall"] >= CLIENTS * SLEEP
    for mode in ("threads", "gevent", "eventlet"):
        assert results[mode]["peak_in_flight"] > 1, mode
        # The sleeps overlap: far from the serial time (3 s), whatever the machine's load.
        assert results[mode]["wall"] < results["blocking"]["wall"] / 2, (mode, results[mode])


def test_the_heartbeat_tells_a_blocked_hub(demo: dict[str, Any]) -> None:
    results = by_mode(demo)
    # Unpatched, the hub is frozen for at least one whole query; patched, never for that long.
    assert results["gevent-unpatched"]["heartbeat_worst"] >= SLEEP
    assert results["gevent"]["heartbeat_worst"] < SLEEP
    assert results["eventlet"]["heartbeat_worst"] < SLEEP


def test_interruptions(demo: dict[str, Any]) -> None:
    green = demo["interrupts"]["gevent"]
    assert green["scheduler_timeout"]["raised"] == "gevent.Timeout"
    assert green["scheduler_timeout"]["backend_after_200ms"] == "gone"
    kept = green["psycogreen_timeout"]
    assert kept["raised"] == "psycopg2.errors.QueryCanceled"
    assert not kept["connection_closed"]
    assert kept["same_backend_after_rollback"]
    bundled = demo["interrupts"]["eventlet_bundled"]["scheduler_timeout"]
    assert bundled["raised"] == "eventlet.Timeout"
    assert bundled["backend_after_200ms"] == "active: SELECT pg_sleep(5)"


def test_the_report_is_printed(demo: dict[str, Any]) -> None:
    out = demo["stdout"]
    for label in ("blocking psycopg2", "gevent + psycogreen", "eventlet + psycogreen"):
        assert label in out
    assert "queries/s" in out
    assert "worst tick gap" in out
    assert "Interrupting SELECT pg_sleep(5)" in out
