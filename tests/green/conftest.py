# SPDX-License-Identifier: BSD-3-Clause
"""Every test here runs once per green scheduler: the ``scheduler`` parameter.

``PSYCOGREEN_TEST_SCHEDULERS`` (comma-separated) narrows the list: each hatch test environment
has one backend installed and sets it to that one (``none`` where there is none: the tests are
then deselected). A scheduler that is not installed fails the test under ``CI=true`` and skips
it elsewhere.
"""

from __future__ import annotations

import os

import pytest

from tests.support.env import require

SCHEDULERS = ("gevent", "eventlet")


def _selected() -> list[str]:
    value = os.environ.get("PSYCOGREEN_TEST_SCHEDULERS", "")
    if value.strip() == "none":
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = set(names) - set(SCHEDULERS)
    if unknown:
        message = f"PSYCOGREEN_TEST_SCHEDULERS names {sorted(unknown)}; known: {SCHEDULERS}"
        raise pytest.UsageError(message)
    return names or list(SCHEDULERS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scheduler" in metafunc.fixturenames:
        metafunc.parametrize("scheduler", _selected() or ["none"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``PSYCOGREEN_TEST_SCHEDULERS=none``, deselect this directory's tests."""
    if _selected():
        return
    here = [item for item in items if "scheduler" in getattr(item, "fixturenames", ())]
    if here:
        config.hook.pytest_deselected(items=here)
        items[:] = [item for item in items if item not in here]


@pytest.fixture
def scheduler(request: pytest.FixtureRequest) -> str:
    """The scheduler this test runs under (its scenarios run in a subprocess patched for it)."""
    name: str = request.param
    require(name)
    require(f"psycogreen.{name}")
    return name
