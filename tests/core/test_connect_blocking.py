# SPDX-License-Identifier: BSD-3-Clause
"""Connect under core's scheduler-free callback: the same promises, without a scheduler.

libpq ignores ``connect_timeout`` under any wait callback, core's own included; each scenario
runs in an unpatched subprocess with ``psycogreen.core.patch_psycopg("blocking")``.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_connect

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("kind", ["never_accepts", "silent"])
def test_dead_host_first_costs_one_connect_timeout(run_green: RunGreen, kind: str) -> None:
    out = run_green(
        "none", scenarios_connect.dead_first, kind=kind, connect_timeout=scenarios_connect.TIMEOUT
    )
    assert out["port"] == out["server_port"], out
    assert (
        scenarios_connect.TIMEOUT - 0.05
        <= out["elapsed"]
        < scenarios_connect.TIMEOUT + scenarios_connect.SLACK
    ), out


def test_all_hosts_dead_one_error_naming_each(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_connect.all_dead, connect_timeout=scenarios_connect.TIMEOUT)
    never, silent, closed = out["ports"]
    kind, message = out["error"]
    assert kind == "OperationalError"
    lines = [line for line in message.splitlines() if line.startswith("connection to server")]
    assert lines == [
        f'connection to server at "127.0.0.1", port {never} failed: timeout expired',
        f'connection to server at "127.0.0.1", port {silent} failed: timeout expired',
        f'connection to server at "127.0.0.1", port {closed} failed: Connection refused',
    ], message
    assert (
        2 * scenarios_connect.TIMEOUT - 0.05
        <= out["elapsed"]
        < 3 * scenarios_connect.TIMEOUT + scenarios_connect.SLACK
    ), out


def test_psycogreen_deadline_bounds_connect(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_connect.deadline, seconds=1.0)
    assert out["error"][1].startswith(
        f'connection to server at "127.0.0.1", port {out["port"]} failed: timeout expired'
    ), out
    assert 0.95 <= out["elapsed"] < 1.0 + scenarios_connect.SLACK, out


def test_service_file(run_green: RunGreen, tmp_path) -> None:
    out = run_green(
        "none",
        scenarios_connect.service_file,
        path=str(tmp_path / "pg_service.conf"),
        connect_timeout=scenarios_connect.TIMEOUT,
    )
    assert out["port"] == out["server_port"], out
    assert (
        scenarios_connect.TIMEOUT - 0.05
        <= out["elapsed"]
        < scenarios_connect.TIMEOUT + scenarios_connect.SLACK
    ), out


def test_connection_factory_and_unix_sockets(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_connect.factory_and_sockets)
    assert out["factory"] is True
    if out["socket_dir"]:
        assert out["socket_host"] is True


def test_unpatched_psycopg2_is_libpqs_own(run_green: RunGreen) -> None:
    """Without a wait callback libpq's blocking connect enforces connect_timeout itself."""
    out = run_green("none", scenarios_connect.unpatched, connect_timeout=scenarios_connect.TIMEOUT)
    assert out["error"][1].count("timeout expired") == 2, out
    assert (
        2 * scenarios_connect.TIMEOUT - 0.05
        <= out["elapsed"]
        < 2 * scenarios_connect.TIMEOUT + 2 * scenarios_connect.SLACK
    ), out


@pytest.mark.slow
def test_no_fd_leak_after_1000_failed_connects(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_connect.fd_leak, n=1000, timeouts=1)
    assert out["failed"] == 1000, out
    assert all("timeout expired" in t for t in out["timeouts"]), out
    assert out["after"] == out["before"], out
