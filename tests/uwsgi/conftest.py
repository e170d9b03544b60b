# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures: real uWSGI servers running ``tests/uwsgi/app.py`` against the session's PostgreSQL.

The ``uwsgi`` binary is the one installed next to the test interpreter, built with the greenlet
plugin by ``.ci/build-uwsgi`` (the hatch environment runs it before pytest). Without it the tests
skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import missing
from tests.uwsgi.server import StartServer, UwsgiServer


def _find_uwsgi() -> Path | None:
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "uwsgi",
        Path(sys.executable).parent / "uwsgi",
    ):
        if candidate.exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def uwsgi_binary() -> Path:
    """The uwsgi of the test environment, checked to have the greenlet plugin."""
    binary = _find_uwsgi()
    if binary is None:
        missing(
            f"no uwsgi next to {sys.executable}; install it with .ci/build-uwsgi {sys.executable}"
        )
    assert binary is not None
    out = subprocess.run(
        [binary, "--plugin-list"], capture_output=True, text=True, timeout=30, check=False
    )
    plugins = set((out.stdout + out.stderr).split())
    if "greenlet" not in plugins:
        missing(
            f"{binary} lacks the greenlet plugin; rebuild it with .ci/build-uwsgi {sys.executable}"
        )
    return binary


@pytest.fixture(scope="session")
def uwsgi_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="psycogreen-uwsgi-") as tmp:
        yield Path(tmp)


@pytest.fixture
def start_uwsgi(uwsgi_binary: Path, dsn: str, uwsgi_tmp: Path) -> Iterator[StartServer]:
    """Start a uWSGI server in a given mode; it is stopped after the test."""
    servers: list[UwsgiServer] = []

    def start(mode: str) -> UwsgiServer:
        server = UwsgiServer(uwsgi_binary, mode, dsn, uwsgi_tmp)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def green_server(uwsgi_binary: Path, dsn: str, uwsgi_tmp: Path) -> Iterator[UwsgiServer]:
    """The supported mode: ``--async 20 --greenlet``, shared by the session."""
    server = UwsgiServer(uwsgi_binary, "greenlet", dsn, uwsgi_tmp)
    try:
        yield server
    finally:
        server.stop()
