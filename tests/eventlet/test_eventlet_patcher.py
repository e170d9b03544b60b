# SPDX-License-Identifier: BSD-3-Clause
"""``eventlet.monkey_patch()`` installs eventlet's own psycopg2 callback; psycogreen replaces it.

eventlet ships the 2010 psycogreen callback as ``eventlet.support.psycopg2_patcher`` and installs
it by default. It is the same scheduler, so ``psycogreen.eventlet.patch_psycopg()`` replaces it
(no :class:`~psycogreen.core.PatchConflictError`). psycopg 3 never detects eventlet: the
warning says how to fix it. Each case runs in its own process.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from tests.support.child import run_json
from tests.support.env import require

PROLOGUE = """
import json, sys, time, warnings
DSN = sys.argv[1]
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import eventlet
    eventlet.monkey_patch()
    import psycopg2.extensions
    import psycogreen.core as core
    import psycogreen.eventlet
{body}
out["warnings"] = [
    [w.category.__name__, str(w.message)] for w in caught
    if "Deprecation" not in w.category.__name__  # eventlet announces its own deprecation
]
print(json.dumps(out))
"""


@pytest.fixture(scope="module", autouse=True)
def _eventlet() -> None:
    require("eventlet")
    require("psycogreen.eventlet")


def run(dsn: str, body: str, **env: str) -> dict[str, Any]:
    code = PROLOGUE.replace("{body}", textwrap.indent(textwrap.dedent(body).strip(), "    "))
    return run_json(["-c", code, dsn], env=env, drop=("PSYCOPG_",))


def test_monkey_patch_callback_is_replaced(dsn: str) -> None:
    out = run(
        dsn,
        """
        installed = psycopg2.extensions.get_wait_callback()
        out["installed"] = f"{installed.__module__}.{installed.__qualname__}"
        out["before"] = core.current_scheduler()
        psycogreen.eventlet.patch_psycopg()
        out["after"] = core.current_scheduler()
        out["is_ours"] = psycopg2.extensions.get_wait_callback() is psycogreen.eventlet.eventlet_wait_callback
        def q():
            c = psycopg2.connect(DSN)
            c.cursor().execute("SELECT pg_sleep(0.2)")
            c.close()
        t = time.perf_counter()
        pool = eventlet.GreenPool()
        for _ in range(5):
            pool.spawn(q)
        pool.waitall()
        out["elapsed"] = time.perf_counter() - t
    """,
    )
    # eventlet's copy of the 2010 callback, installed by monkey_patch() (psycopg on by default)
    assert out["installed"] == "eventlet.support.psycopg2_patcher.eventlet_wait_callback"
    assert out["before"] is None  # not psycogreen's own
    assert out["after"] == "eventlet"
    assert out["is_ours"] is True
    assert out["warnings"] == []
    assert out["elapsed"] < 0.7, out  # 5 x pg_sleep(0.2) overlap; serial would be 1 s


PSYCOPG3_CONCURRENT = """
import psycopg
psycogreen.eventlet.patch_psycopg()
out["reason"] = core.psycopg_blocking_reason("eventlet")
def q3():
    with psycopg.connect(DSN) as c:
        c.execute("SELECT pg_sleep(0.2)")
t = time.perf_counter()
pool = eventlet.GreenPool()
for _ in range(4):
    pool.spawn(q3)
pool.waitall()
out["elapsed3"] = time.perf_counter() - t
"""


def test_psycopg3_under_eventlet_warns(dsn: str) -> None:
    require("psycopg")
    out = run(dsn, PSYCOPG3_CONCURRENT)
    [(category, message)] = out["warnings"]
    assert category == "PsycopgBlockingWarning"
    assert "PSYCOPG_WAIT_FUNC=wait_select" in message
    assert "wait_c" in out["reason"]
    assert out["elapsed3"] >= 0.75, out  # the warning is true: 4 x 0.2 s one after the other


def test_psycopg3_with_wait_select_is_quiet_and_green(dsn: str) -> None:
    require("psycopg")
    out = run(dsn, PSYCOPG3_CONCURRENT, PSYCOPG_WAIT_FUNC="wait_select")
    assert out["warnings"] == []
    assert out["reason"] is None
    assert out["elapsed3"] < 0.6, out  # the documented fix works: the queries overlap
