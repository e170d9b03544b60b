# SPDX-License-Identifier: BSD-3-Clause
"""Servers for the deployment recipes: started on 127.0.0.1 free ports, stopped by pid.

Every monkey-patched program (gunicorn worker, Celery worker, recipe script) runs in its own
process; the test process stays unpatched and only measures from outside.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.child import run_json
from tests.support.env import missing, require

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{tail(log)}", pytrace=False)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"server not listening on {port} after {timeout} s:\n{tail(log)}", pytrace=False)


def tail(log: Path, n: int = 6000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


class Server:
    """A process started by the tests, in its own process group, stopped by its pid."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Path,
        user: str | None = None,
    ) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            # The group is the one start_new_session made for this process: its children
            # (gunicorn and Celery workers) go with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def recipe_env(dsn: str) -> dict[str, str]:
    """The environment of a recipe process: the test DSN, and nothing psycogreen-specific."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PSYCOGREEN_GEVENT", "PSYCOPG_", "PYTEST_"))
    }
    env["DATABASE_DSN"] = dsn
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return env


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers for one test; stop them (by pid) when it ends."""
    started: list[Server] = []

    def start(
        args: Sequence[str], *, cwd: Path, env: dict[str, str], name: str, user: str | None = None
    ) -> Server:
        server = Server(args, cwd=cwd, env=env, log=tmp_path / f"{name}.log", user=user)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway Redis server (the Debian package's binary), no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian: apt-get install redis-server)")
        raise AssertionError  # pragma: no cover
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="psycogreen-redis-"))
    log = workdir / "redis.log"
    server = Server(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
        ],
        cwd=workdir,
        env=dict(os.environ),
        log=log,
    )
    try:
        wait_for_port(port, server.proc, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_params(dsn: str) -> dict[str, str]:
    psycopg2 = require("psycopg2.extensions")
    return dict(psycopg2.parse_dsn(dsn))


@pytest.fixture(scope="session")
def pgbouncer(dsn: str) -> Iterator[dict[str, Any]]:
    """pgbouncer (the Debian package) in transaction pooling with 20 server connections."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        missing("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        raise AssertionError  # pragma: no cover
    params = _pg_params(dsn)
    user: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix="psycogreen-pgbouncer-"))
    if os.geteuid() == 0:  # pgbouncer refuses root: "PgBouncer should not run as root"
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing("running as root and no 'postgres' user to run pgbouncer as")
        shutil.chown(workdir, user=user)
    port = free_port()
    target = " ".join(f"{k}={params[k]}" for k in ("host", "port", "user", "dbname") if k in params)
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"postgres = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir = {workdir}\n"
        "auth_type = any\n"
        "pool_mode = transaction\n"
        "default_pool_size = 20\n"
        "min_pool_size = 0\n"
        "reserve_pool_size = 0\n"
        "max_client_conn = 2000\n"
        "max_db_connections = 20\n"
        "server_reset_query =\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "admin_users = postgres\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    if user:
        shutil.chown(ini, user=user)
    log = workdir / "stdout.log"
    server = Server([binary, str(ini)], cwd=workdir, env=dict(os.environ), log=log, user=user)
    try:
        wait_for_port(port, server.proc, workdir / "pgbouncer.log")
        yield {
            "dsn": f"host=127.0.0.1 port={port} user={params.get('user', 'postgres')} dbname=postgres",
            "admin_dsn": f"host=127.0.0.1 port={port} user=postgres dbname=pgbouncer",
            "pool_size": 20,
            "server_dsn": dsn,
        }
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_recipe(script: Path, *args: str, env: dict[str, str], timeout: float = 120) -> Any:
    """Run a recipe script in its own process, in ``env`` alone; return its JSON result."""
    return run_json([script, *args], env=env, inherit=False, cwd=script.parent, timeout=timeout)
