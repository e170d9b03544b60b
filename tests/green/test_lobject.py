# SPDX-License-Identifier: BSD-3-Clause
"""Large objects on patched connections: under every green backend (once per scheduler).

The API scenario runs twice, patched and unpatched (psycopg2's own ``lobject``), and the two
observations must be equal; the others run patched only.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_lobject

# Slow, and independent of the Python version: one Python's environments run it.
pytestmark = [pytest.mark.postgres, pytest.mark.once]


def test_api_is_psycopg2s(scheduler: str, run_green: RunGreen) -> None:
    """Every method, mode, attribute and error, observed patched and plain: the same."""
    plain = run_green("none", scenarios_lobject.api, timeout=300)
    patched = run_green(scheduler, scenarios_lobject.api, timeout=300)
    assert plain["class_is_lobject"] is True
    assert plain["read_all_md5"] == [3 * (1 << 20) + 17, True]
    # a few anchors, so that equal-but-empty observations cannot pass
    assert plain["open_missing"]["raised"] == "OperationalError", plain["open_missing"]
    assert plain["read_after_commit"]["str"] == "lobject isn't valid anymore"
    assert plain["bad_mode_'x'"]["str"] == "bad mode for lobject: 'x'"
    differences = {
        key: (plain.get(key), patched.get(key))
        for key in plain.keys() | patched.keys()
        if plain.get(key) != patched.get(key)
    }
    assert not differences, differences


def test_streams_keep_the_scheduler_running(scheduler: str, run_green: RunGreen) -> None:
    """64 MiB each way, 1 MiB per query: a 10 ms heartbeat never stalls more than 50 ms.

    As for COPY's million rows (``tests/green/test_copy.py``): the CPU-time bound is the stall the large
    object causes; the wall-clock one only says it never blocked the scheduler outright on a
    shared machine.
    """
    out = run_green(scheduler, scenarios_lobject.streams, megabytes=64, timeout=300)
    assert out["written"] == 64 << 20, out
    assert out["same"] is True, out
    assert out["write_cpu_gap"] < 0.05, out
    assert out["read_cpu_gap"] < 0.05, out
    assert out["write_gap"] < 0.25, out
    assert out["read_gap"] < 0.25, out


def test_another_greenlet_on_the_connection_is_refused(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_lobject.busy, timeout=300)
    assert out["written"] == 64 << 20, out
    assert out["intruder"] == ["ConnectionBusyError"] * 3, out
    assert out["tell"] == 64 << 20, out


def test_timeout_during_a_read(scheduler: str, run_green: RunGreen) -> None:
    """The scheduler's timeout interrupts a 512 MiB read promptly; the backend stops."""
    out: dict[str, Any] = run_green(scheduler, scenarios_lobject.interrupted, timeout=300)
    assert out["result"] == "Timeout", out
    assert out["elapsed"] < 2.0, out
    assert out["server_state"] != "active", out
