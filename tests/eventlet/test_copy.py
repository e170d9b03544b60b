# SPDX-License-Identifier: BSD-3-Clause
"""COPY under eventlet's own wait callback (the one ``eventlet.monkey_patch()`` installs)."""

from __future__ import annotations

from tests.conftest import RunGreen
from tests.support import scenarios_copy


def test_copy_with_eventlets_own_callback(run_green: RunGreen) -> None:
    out = run_green("eventlet", scenarios_copy.eventlet_own_callback)
    assert out["callback"] == "eventlet.support.psycopg2_patcher", out
    assert out["backend_imported_before"] is False
    assert out["rows"] == 100
    assert out["backend_imported_after"] is True  # its waits, registered on import
