# SPDX-License-Identifier: BSD-3-Clause
"""What every green backend does: overlapping queries, errors, large values, named cursors.

Each test runs once per scheduler (the ``scheduler`` parameter, ``tests/green/conftest.py``),
its scenario in a subprocess patched for it.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios

pytestmark = pytest.mark.postgres


def test_concurrent_queries_overlap(scheduler: str, run_green: RunGreen) -> None:
    """20 x pg_sleep(0.3) on 20 connections finish in well under 2 x 0.3 s, hub ticking."""
    out = run_green(scheduler, scenarios.concurrent_sleep, n=20, seconds=0.3)
    assert out["pids"] == 20
    assert out["wall"] < 0.55, out
    assert out["max_gap"] < 0.1, out


def test_connect_concurrently(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.connect_many, n=20)
    assert out["pids"] == 20


def test_server_errors_arrive_as_psycopg2_errors(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.server_errors)
    assert out["SELECT 1/0"] == ["DivisionByZero", "22012", 0]
    assert out["SELECT * FROM no_such_table"] == ["UndefinedTable", "42P01", 0]
    assert out["SELECT 'x'::int"] == ["InvalidTextRepresentation", "22P02", 0]
    assert out["raise"] == ["RaiseException", "P0001", "boom"]
    assert out["after"] == 42
    assert 'database "no_such_database" does not exist' in out["bad_db"]


def test_large_result(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.large_result, rows=100_000)
    assert out["rows"] == 100_000
    assert out["sum"] == 100_000 * 100_001 // 2
    assert out["last"] == "1e3aa6f4fd1ac4bf7ed9d7f9c5f8f2b1" or len(out["last"]) == 32


def test_large_parameter_goes_through_the_write_wait(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.large_param, size=16 * 1024 * 1024)
    assert out == {"length": 16 * 1024 * 1024, "md5_ok": True}


def test_named_cursors_interleave(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.named_cursors, rows=5000)
    assert out["a"] == [5000, 5000 * 5001 // 2]
    assert out["b"] == [5000, 5000 * 5001 // 2]
    assert out["ticks"] == 20


def test_listen_notify_wakes_up(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.listen_notify)
    assert out["payloads"] == ["0", "1", "2"]
    assert out["max_delay"] < 0.5, out


def test_registry(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios.registry)
    assert out["idempotent"] is True
    assert out["is_patched"] is True
    assert out["scheduler"] == scheduler
    assert out["callback_name"] == f"{scheduler}_wait_callback"
    assert f"already patched for {scheduler}" in out["conflict"]
    assert "for blocking" in out["conflict"]
    assert out["unpatch"] is True
    assert out["after_unpatch"] is True
    assert out["unpatch_again"] is False
    assert out["auto"] == scheduler  # detected from the monkey-patched modules
    assert out["query"] == 1


def test_psycogreen_1_0_2_callback_is_replaced(
    scheduler: str, run_green: RunGreen, legacy: str
) -> None:
    out = run_green(scheduler, scenarios.legacy_replaced, legacy=legacy)
    assert out["legacy_module"] == f"psycogreen.{scheduler}"
    assert out["before"] is False
    assert out["after"] == scheduler
    assert out["replaced"] is True


def test_query_timeout_cancels_and_keeps_the_connection(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios.query_timeout)
    assert out["error"] == "QueryCanceled"
    assert out["elapsed"] < 1.0, out
    assert out["closed"] == 0
    assert out["after"] == 7
    assert out["partial_elapsed"] < 1.0, out
    assert out["partial_after"] == 8


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_interrupt_cancels_on_the_server(scheduler: str, run_green: RunGreen, how: str) -> None:
    """The scheduler's own Timeout or a kill propagates unchanged; the statement stops."""
    out = run_green(scheduler, scenarios.interrupted, how=how)
    assert out["result"] == ("Timeout" if how == "timeout" else "GreenletExit")
    assert out["closed"] != 0
    # Not executing any more: idle (possibly in the aborted transaction) or disconnected.
    assert out["server_state"] in {"idle", "idle in transaction (aborted)", "gone"}, out
    assert out["settle"] < 1.0, out
