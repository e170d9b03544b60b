# SPDX-License-Identifier: BSD-3-Clause
"""Recipe 5: pgbouncer (the Debian package) in transaction pooling in front of PostgreSQL.

500 green threads through a pool of 20 server connections; session state and LISTEN, which
transaction pooling breaks, checked for what they do.
"""

from __future__ import annotations

from typing import Any

from tests.recipes.conftest import EXAMPLES, run_recipe
from tests.support.env import require

SCRIPT = EXAMPLES / "pgbouncer" / "through_pgbouncer.py"


def test_500_green_threads_through_20_server_connections(
    pgbouncer: dict[str, Any], recipe_env: dict[str, str]
) -> None:
    require("gevent")
    env = {**recipe_env, "PGBOUNCER_DSN": pgbouncer["dsn"]}
    out = run_recipe(SCRIPT, env=env, timeout=120)
    burst = out["burst"]
    print(f"\npgbouncer: {burst}")
    assert out["scheduler"] == "gevent"
    assert burst["errors"] == []
    assert burst["ok"] == 500
    # Every query ran on one of pgbouncer's 20 server connections.
    assert burst["server_connections"] <= pgbouncer["pool_size"]
    # 500 x pg_sleep(0.05) on 20 connections: 1.25 s if the pool is always busy; serial
    # (psycopg2 blocking the hub) would take 25 s.
    assert burst["elapsed"] < 6, burst

    # What transaction pooling breaks: a session-level SET stays on the server connection and
    # the next client that borrows it inherits it (pgbouncer reuses the last released one).
    assert out["set_leaks_to_other_client"] == "4321ms"
    # SET LOCAL lives and dies with the transaction: it works, and does not leak.
    assert out["set_local"]["inside"] == "1234ms"
    assert out["set_local"]["other_client_after"] != "1234ms"
    # LISTEN through pgbouncer hears nothing; straight to the server it does.
    assert out["listen_received"] == []
    assert out["listen_direct_received"] == ["hello"]
    print(f"pgbouncer: deadline {out['deadline']}")
    # psycogreen's deadline works through pgbouncer: the server cancels, the connection stays.
    assert out["deadline"]["raised"] == "QueryCanceled"
    assert out["deadline"]["elapsed"] < 2, out["deadline"]  # pg_sleep(5) cut at 0.2 s
    assert out["deadline"]["after"] == 7
