# SPDX-License-Identifier: BSD-3-Clause
"""Who blocked the hub: gevent's monitor thread finds psycopg2 blocking outside psycogreen.

Each case runs a query that blocks the hub for 0.6 s with gevent's monitor thread on
(``GEVENT_MONITOR_THREAD_ENABLE=1``, ``GEVENT_MAX_BLOCKING_TIME=0.1``) and checks psycogreen's
warning: its cause, its fix, its call site, and that it comes within ``max_blocking_time`` +
100 ms of the query's start.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_events
from tests.support.env import missing, require

pytestmark = pytest.mark.postgres

PERIOD = 0.1
MONITOR = {
    "GEVENT_MONITOR_THREAD_ENABLE": "1",
    "GEVENT_MAX_BLOCKING_TIME": str(PERIOD),
    "PSYCOGREEN_GEVENT_AUTOPATCH": "0",
}
GROUP = "gevent.plugins.monkey.did_patch_builtins"


def _blocked(run_green: RunGreen, how: str, watch: str, **environ: str) -> dict[str, Any]:
    return run_green(
        "gevent",
        scenarios_events.blocked_hub,
        environ={**MONITOR, **environ},
        how=how,
        watch=watch,
    )


def _check_warning(out: dict[str, Any], cause: str, fix: str) -> dict[str, Any]:
    assert out["period"] == PERIOD, out
    assert out["query"] >= 0.6, out  # the hub really was blocked
    assert out["gevent_reports"], out  # gevent's monitor saw it
    assert len(out["warnings"]) == 1, out  # once, though gevent reports every period
    at, message = out["warnings"][0]
    assert at < PERIOD + 0.1, out
    assert fix in message, message
    assert "scenarios_events.py" in message, message  # the application's call site
    if out["pid"] is not None:
        assert f"backend pid {out['pid']}" in message, message
    (record,) = out["records"]
    assert record["cause"] == cause, record
    assert record["scheduler"] == "gevent", record
    assert record["pid"] == out["pid"], record
    assert record["blocked_for"] == PERIOD, record
    assert record["site"].split(" in ")[1] == "blocked_hub", record
    return record


def test_the_plugin_watches_and_names_an_unpatched_query(
    scheduler: str, run_green: RunGreen
) -> None:
    names = [ep.value for ep in importlib.metadata.entry_points(group=GROUP)]
    if "psycogreen.gevent._plugin:did_patch_builtins" not in names:
        missing(f"psycogreen-gevent is not installed (no entry point in {GROUP}: {names})")
    out = _blocked(run_green, "not_patched", "plugin")
    assert out["watching_after_patch_all"] is True, out  # with automatic patching off
    record = _check_warning(out, "not_patched", "psycogreen.gevent.patch_psycopg()")
    assert "PSYCOGREEN_GEVENT_AUTOPATCH=0" in record["advice"], record
    assert record["callback"] is None, record


def test_an_unpatched_query_is_named_with_its_fix(scheduler: str, run_green: RunGreen) -> None:
    out = _blocked(run_green, "not_patched", "call")
    _check_warning(out, "not_patched", "right after gevent.monkey.patch_all()")


def test_an_unpatched_connect_is_named(scheduler: str, run_green: RunGreen) -> None:
    out = _blocked(run_green, "connect", "call")  # a frame of psycopg2.connect() itself
    record = _check_warning(out, "not_patched", "right after gevent.monkey.patch_all()")
    assert record["pid"] is None, record  # no connection yet


def test_psycopg3_with_its_c_wait_is_named(scheduler: str, run_green: RunGreen) -> None:
    require("psycopg")
    out = _blocked(run_green, "psycopg3", "call", PSYCOPG_WAIT_FUNC="wait_c")
    record = _check_warning(out, "psycopg3", "import psycopg only after")
    assert "wait_c" in record["advice"], record


def test_a_foreign_blocking_callback_is_named(scheduler: str, run_green: RunGreen) -> None:
    out = _blocked(run_green, "foreign", "call")
    record = _check_warning(out, "foreign_callback", "patch_psycopg(force=True)")
    assert record["callback"].endswith("blocking_wait"), record


def test_a_patched_query_blocks_nothing_and_is_not_reported(
    scheduler: str, run_green: RunGreen
) -> None:
    out = _blocked(run_green, "patched", "call")
    assert out["gevent_reports"] == [], out
    assert out["warnings"] == [], out
    assert out["records"] == [], out
