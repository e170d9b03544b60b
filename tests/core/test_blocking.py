# SPDX-License-Identifier: BSD-3-Clause
"""Core's scheduler-free callback against a real PostgreSQL, each run in its own process."""

from __future__ import annotations

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_core

pytestmark = pytest.mark.postgres


def test_queries_errors_and_deadline(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_core.blocking_queries)
    assert out["patched"] == "blocking"  # nothing monkey-patched: the scheduler-free callback
    assert out["scheduler"] == "blocking"
    assert out["rows"] == 50000
    assert out["param"] == 8 * 1024 * 1024
    assert out["error"] == "DivisionByZero"
    assert 0.2 <= out["timeout"] < 1.5, out
    assert out["after_timeout"] == 3


def test_ctrl_c_cancels_on_the_server_and_keeps_the_connection(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_core.blocking_sigint)
    assert out["error"] == "QueryCanceled"
    assert out["elapsed"] < 1.5, out
    assert out["closed"] == 0
    assert out["server_state"] == "idle in transaction (aborted)"
    assert out["after"] == 5


def test_file_descriptors_above_1023(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_core.many_fds)
    assert out["fileno"] > 1023
    assert out["value"] == 9


def test_cancel_from_another_thread(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_core.blocking_cancel_from_a_thread)
    assert out["class"] == "GuardedConnection"
    assert out["error"] == "QueryCanceled"
    assert out["delay"] < 1.0, out
    assert out["closed"] == 0
    assert out["after"] == 6
    assert out["core_requests"] == [True, True], out
    assert out["unpatched"] == 8
    assert out["core_requests_unpatched"] == 2, out


def test_ctrl_c_on_a_frozen_network_arrives_on_time(run_green: RunGreen) -> None:
    """Ctrl-C reaches the program within 100 ms even when the cancel request cannot be sent:
    the request goes on in a thread of its own, and the statement stops once it arrives."""
    out = run_green("none", scenarios_core.blocking_sigint_frozen, after=1.0)
    assert out["frozen_at"] < 1.0, out  # the statement ran, then the network froze
    assert out["error"] == "KeyboardInterrupt", out
    assert 1.0 <= out["elapsed"] < 1.1, out
    assert out["closed"] != 0, out  # the connection could not be kept: its state is unknown
    assert out["server_state"] != "active", out
