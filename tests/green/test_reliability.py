# SPDX-License-Identifier: BSD-3-Clause
"""The hub's own context, interrupts on a dead network, nested interrupts, the 1.x install path.

What each case promises is in ``docs/interruptions.md`` and ``docs/migrating.md``.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_reliability
from tests.support.env import require

# Slow, and independent of the Python version: one Python's environments run it.
pytestmark = pytest.mark.postgres

# How long the hub itself may block for a rollback against a local server: a round trip
# (milliseconds), measured around the rollback; and the heartbeat goes on (not frozen for good).
HUB_BLOCKED = 0.1
HUB_GAP = 0.5


@pytest.mark.parametrize("how", ["callback", "finalizer"])
def test_a_rollback_run_by_the_hub_completes(scheduler: str, run_green: RunGreen, how: str) -> None:
    out = run_green(scheduler, scenarios_reliability.hub_rollback, how=how)
    assert out["in_hub"] is True, out
    assert "error" not in out, out
    assert out["closed"] == 0, out
    assert out["rows_after"] == 0, out  # rolled back, and the connection still answers
    assert out["blocked"] < HUB_BLOCKED, out
    assert out["max_gap"] < HUB_GAP, out
    # Reported once, with the fix.
    assert len(out["warnings"]) == 1, out
    assert "spawn it" in out["warnings"][0], out


def test_a_slow_statement_run_by_the_hub_is_bounded(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_reliability.hub_query_deadline, seconds=0.3)
    assert out["error"] == "QueryCanceled", out
    assert 0.3 <= out["elapsed"] < 0.3 + 0.5, out
    assert out["closed"] == 0, out
    assert out["after"] == 5, out


def test_sqlalchemy_returns_collected_connections_from_the_hub(
    scheduler: str, run_green: RunGreen
) -> None:
    require("sqlalchemy")
    out = run_green(
        scheduler, scenarios_reliability.sqlalchemy_collected, greenlets=200, checkouts=10_000
    )
    assert out["done"] == 10_000, out
    assert out["hub_collections"] > 0, out
    assert out["error_count"] == 0, out
    assert out["blocking_errors"] == 0, out
    assert out["logged_error_count"] == 0, out
    assert out["closed"] == 0, out
    assert out["invalidated"] == 0, out
    assert out["max_gap"] < 0.5, out
    assert out["leaked"] == 0, out


# --- interrupts on a dead network: on time, the cancel finished in the background ------------

# An interrupt reaches the caller within 100 ms of when it fired, whatever the network does.
ON_TIME = 0.1


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_an_interrupt_on_a_frozen_network_arrives_on_time(
    scheduler: str, run_green: RunGreen, how: str
) -> None:
    out = run_green(scheduler, scenarios_reliability.frozen_interrupt, how=how, limit=1.0)
    assert out["exc"] == {"timeout": "Timeout", "kill": "GreenletExit"}[how], out
    assert 1.0 <= out["elapsed"] < 1.0 + ON_TIME, out
    assert out["closed"] != 0, out
    assert out["max_gap"] < 0.1, out
    assert out["backend_gone"] is True, out
    assert out["proxy_upstreams"] == 0, out
    assert out["leaked"] == 0, out


def test_a_deadline_on_a_frozen_network_waits_for_the_cancel_bound(
    scheduler: str, run_green: RunGreen
) -> None:
    """A deadline keeps the connection when it can: it waits for the cancel, bounded (2 s)."""
    out = run_green(scheduler, scenarios_reliability.frozen_interrupt, how="deadline", limit=1.0)
    assert out["exc"] == "OperationalError", out
    assert 1.0 + 2.0 <= out["elapsed"] < 1.0 + 2.0 + 0.5, out
    assert out["closed"] != 0, out
    assert out["backend_gone"] is True, out
    assert out["leaked"] == 0, out


# --- two interrupts that arrive together -----------------------------------------------------


@pytest.mark.parametrize("how", ["two_timeouts", "timeout_deadline", "timeout_kill"])
def test_a_second_interrupt_does_not_stop_the_cancel(
    scheduler: str, run_green: RunGreen, how: str
) -> None:
    out = run_green(scheduler, scenarios_reliability.nested, how=how, seconds=0.2)
    assert out["exc"] in {"Timeout", "GreenletExit", "QueryCanceled"}, out
    assert 0.2 <= out["raised_after"] < 0.2 + ON_TIME, out
    assert out["state"] != "active", out
    assert out["settled"] < 0.1, out  # the backend idle within 100 ms of the interrupt
    assert out["backend_gone"] is True, out
    if how == "two_timeouts":
        # The other interrupt travels with the one the caller gets, as documented.
        assert out["context_is_other_timeout"] is True, out


# --- the 1.x install path --------------------------------------------------------------------


def test_the_1x_install_path_is_told_and_then_guarded(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_reliability.installed_the_1x_way)
    assert out["is_patched"] is True, out
    assert out["first_guarded"] is False, out  # made before psycogreen saw the callback run
    assert out["second_guarded"] is True, out
    assert out["copied"] == 3, out
    assert out["busy_refused"] is True, out
    assert len(out["warnings"]) == 1, out  # once
    assert f"psycogreen.{scheduler}.patch_psycopg()" in out["warnings"][0], out


def test_a_kill_is_not_replaced_by_a_later_timeout(scheduler: str, run_green: RunGreen) -> None:
    """The kill's cancel is still under way when the greenlet's own Timeout expires: the kill,
    not the Timeout (which the greenlet would catch and retry), reaches the greenlet."""
    out = run_green(scheduler, scenarios_reliability.kill_during_own_timeout)
    assert out["dead"] is True, out
    assert out["attempts"] == ["GreenletExit"], out
