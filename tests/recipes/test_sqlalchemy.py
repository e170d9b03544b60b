# SPDX-License-Identifier: BSD-3-Clause
"""Recipe 4: one SQLAlchemy QueuePool (10 connections) shared by 200 green threads.

examples/sqlalchemy_pool/shared_pool.py runs in its own monkey-patched process and reports.
"""

from __future__ import annotations

import pytest

from tests.recipes.conftest import EXAMPLES, run_recipe
from tests.support.env import require

SCRIPT = EXAMPLES / "sqlalchemy_pool" / "shared_pool.py"


@pytest.mark.parametrize("sched", ["gevent", "eventlet"])
def test_shared_queue_pool(sched: str, recipe_env: dict[str, str]) -> None:
    require("sqlalchemy")
    require(sched)
    out = run_recipe(SCRIPT, sched, env=recipe_env, timeout=60)
    print(f"\n{sched}: {out}")
    assert out["scheduler"] == sched
    # 200 green threads x 3 queries through 10 connections; 20 killed (5 inside a query).
    assert out["killed_in_query"] == 5
    assert out["errors"] == []
    assert out["completed"] == 180
    assert out["pool_timeouts_under_load"] == 0  # the queue moved: nobody waited 30 s
    assert out["elapsed"] < 5  # 540 x pg_sleep(0.01) / 10 connections = 0.54 s; no deadlock
    # Nothing leaked: the killed threads' connections went back (or were replaced).
    assert out["checked_out_after"] == 0
    # Pool exhausted: each waiter gets TimeoutError after pool_timeout (1 s), the hub keeps ticking.
    assert [kind for kind, _ in out["timeouts"]] == ["TimeoutError"] * 5
    assert all(0.95 <= waited < 1.5 for _, waited in out["timeouts"]), out["timeouts"]
    assert out["max_tick"] < 0.2, out["max_tick"]  # 20 ms heartbeat never stalled
    assert out["after_timeouts"] == 42
    assert out["checked_out_end"] == 0
    # The server has at most 10 + 10 connections (the two pools), all idle: none was left
    # in a transaction by a killed green thread ...
    assert set(out["server"]) == {"idle"}
    assert 10 < out["server"]["idle"] <= 20
    # ... and none once the engines are disposed and the garbage collected: a green thread
    # killed while the pool was opening or handing over a connection can leave it to the
    # garbage collector (measured: 0 to 4 of the 20 kills).
    assert sum(out["server_after_dispose"].values()) <= 20, out["server_after_dispose"]
    assert out["server_after_gc"] == {}


GREEN = EXAMPLES / "sqlalchemy_pool" / "green_pool.py"


@pytest.mark.parametrize("sched", ["gevent", "eventlet"])
def test_engine_on_the_green_pool(sched: str, recipe_env: dict[str, str]) -> None:
    """NullPool + creator=pool.getconn + close_returns: 200 green threads, 20 killed."""
    require("sqlalchemy")
    require(sched)
    out = run_recipe(GREEN, sched, env=recipe_env, timeout=60)
    print(f"\n{sched}: {out}")
    assert out["scheduler"] == sched
    assert out["killed_in_query"] == 5
    assert out["errors"] == []
    assert out["completed"] == 180
    assert out["elapsed"] < 5
    stats = out["stats"]
    assert stats["pool_size"] == stats["pool_available"] <= 10, stats  # nothing checked out
    assert out["server"] == {"idle": stats["pool_size"]}, out  # exactly the pool's, all idle
    assert out["exhausted"] == "PoolTimeout"
    assert 1.0 <= out["waited"] < 1.3, out
    assert out["after"] == 42
    assert out["checked_out_end"] == 0
    assert out["server_after_close"] == {}
