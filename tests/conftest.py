# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by every test: a real PostgreSQL, and monkey-patched subprocesses.

``PSYCOGREEN_TEST_DSN`` points the tests at an existing server; without it a throwaway server
is started for the session (127.0.0.1 and a unix socket only) and removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import missing
from tests.support.postgres import ThrowawayPostgres

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def run_green(dsn: str) -> RunGreen:
    """Run ``tests.support.scenarios.<name>`` in a subprocess patched for ``sched``; return its result."""

    def run(sched: str, name: str, *, timeout: float = 120, **kwargs: Any) -> Any:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PSYCOGREEN_TEST_DSN": dsn, "PYTHONPATH": path}
        proc = subprocess.run(
            [sys.executable, "-m", "tests.support.green", sched, name, json.dumps(kwargs)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"scenario {name} under {sched} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}",
                pytrace=False,
            )
        lines = proc.stdout.strip().splitlines()
        return json.loads(lines[-1])

    return run
