# SPDX-License-Identifier: BSD-3-Clause
"""The backends' waits: fd numbers reused between waits (the waits keep state per fd)."""

from __future__ import annotations

from tests.conftest import RunGreen
from tests.support import scenarios_waits


def test_a_reused_fd_number_is_waited_on_afresh(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_waits.fd_reused, rounds=20)
    assert out["same_fd"] == 20, out
    assert out["timed_out"] == 0, out
    assert out["ready"] == 20, out
    assert out["queries"] == 20, out
