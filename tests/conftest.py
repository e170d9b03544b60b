# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by every test: a real PostgreSQL, and monkey-patched subprocesses.

``PSYCOGREEN_TEST_DSN`` points the tests at an existing server; without it a throwaway server
is started for the session (127.0.0.1 and a unix socket only) and removed afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.child import ChildFailedError, run_json
from tests.support.env import missing
from tests.support.postgres import ThrowawayPostgres

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests marked ``once`` where ``PSYCOGREEN_TEST_ONCE=0`` (hatch.toml's matrix)."""
    if os.environ.get("PSYCOGREEN_TEST_ONCE", "1") != "0":
        return
    once = [item for item in items if item.get_closest_marker("once")]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not item.get_closest_marker("once")]


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """The DSN of a real PostgreSQL server."""
    if env := os.environ.get("PSYCOGREEN_TEST_DSN"):
        yield env
        return
    server = ThrowawayPostgres()
    try:
        server.start()
    except Exception as exc:
        missing(f"no PostgreSQL server: {exc}")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def conn(dsn: str) -> Iterator[Any]:
    """A plain (unpatched) psycopg2 connection, for checking the server side."""
    psycopg2 = pytest.importorskip("psycopg2")
    c = psycopg2.connect(dsn)
    c.autocommit = True
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def legacy() -> str:
    """The directory of psycogreen 1.0.2's modules (downloaded once)."""
    from tests.support.legacy import legacy_dir

    try:
        return str(legacy_dir())
    except Exception as exc:
        missing(f"psycogreen 1.0.2 could not be downloaded: {exc}")
        raise


RunGreen = Callable[..., Any]


def scenario_name(scenario: Callable[..., Any]) -> str:
    """``module:function`` of a scenario function of ``tests/support/scenarios*.py``."""
    module = scenario.__module__
    prefix = "tests.support."
    if not module.startswith(prefix):
        message = f"{scenario!r} is not a scenario of tests/support/"
        raise ValueError(message)
    return f"{module[len(prefix) :]}:{scenario.__name__}"


@pytest.fixture
def run_green(dsn: str) -> RunGreen:
    """Run ``scenario`` in a subprocess monkey-patched for ``sched``; return its JSON result.

    ``scenario`` is a function of ``tests/support/scenarios*.py`` (``scenario(sched, dsn,
    **kwargs)`` in the child); ``environ`` is added to the child's environment.
    """

    def run(
        sched: str,
        scenario: Callable[..., Any],
        *,
        timeout: float = 120,
        environ: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        name = scenario_name(scenario)
        args = ["-m", "tests.support.green", sched, name, json.dumps(kw)]
        env = {"PSYCOGREEN_TEST_DSN": dsn, **(environ or {})}
        try:
            return run_json(args, env=env, timeout=timeout)
        except ChildFailedError as exc:
            pytest.fail(f"scenario {name} under {sched}: {exc}", pytrace=False)

    return run
