# SPDX-License-Identifier: BSD-3-Clause
"""The patch registry: foreign callbacks are refused with a clear error, never replaced silently."""

from __future__ import annotations

import pytest

import psycogreen.core as core
from psycogreen.core import SchedulerNotFoundError, get_backend
from tests.conftest import RunGreen
from tests.support import scenarios_core

pytestmark = pytest.mark.postgres


def test_foreign_callback_is_refused_then_forced(run_green: RunGreen) -> None:
    out = run_green("none", scenarios_core.foreign_callbacks, legacy="")
    assert "other code installed a wait callback (psycopg2.extras.wait_select)" in out["foreign"]
    assert "force=True" in out["foreign"]
    assert "set_wait_callback(None)" in out["foreign"]
    assert out["kept"] is True
    assert out["forced"] == "blocking"
    assert out["unpatch"] is True
    assert out["unpatch_foreign"] is False
    assert out["foreign_left"] is True


def test_psycogreen_1_0_2_callback_conflicts_with_another_scheduler(
    run_green: RunGreen, legacy: str
) -> None:
    """1.0.2's callback counts as its scheduler's: patching for "blocking" over it is refused."""
    import importlib.util

    sched = "gevent" if importlib.util.find_spec("gevent") else "eventlet"
    out = run_green(sched, scenarios_core.foreign_callbacks, legacy=legacy)
    assert (
        f"already patched for {sched} (psycogreen.{sched}.{sched}_wait_callback, installed by other code)"
        in out["legacy_conflict"]
    )


def test_unknown_scheduler_name() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'asyncio'"):
        get_backend("asyncio")


def test_missing_backend_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    def fail(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(SchedulerNotFoundError, match="pip install psycogreen-eventlet"):
        get_backend("eventlet")
    assert issubclass(SchedulerNotFoundError, ImportError)


def test_public_api_is_exported() -> None:
    for name in core.__all__:
        assert hasattr(core, name), name
