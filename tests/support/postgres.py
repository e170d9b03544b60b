# SPDX-License-Identifier: BSD-3-Clause
"""A throwaway PostgreSQL server for the tests, the demo and the benchmarks.

It uses the machine's PostgreSQL binaries, listens on 127.0.0.1 (a free port) and on a unix
socket in its own temporary directory, and deletes everything when stopped. ``initdb`` refuses
to run as root, so as root the server runs as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresNotFoundError", "ThrowawayPostgres", "find_bindir", "throwaway_postgres"]


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if env := os.environ.get("PSYCOGREEN_PG_BINDIR"):
        candidates.append(Path(env))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for path in candidates:
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    message = (
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres); install them "
        "(Debian/Ubuntu: apt-get install postgresql) or set PSYCOGREEN_TEST_DSN to a server"
    )
    raise PostgresNotFoundError(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server in a temporary directory, started and stopped by this process."""

    def __init__(
        self, *, max_connections: int = 1100, settings: dict[str, str] | None = None
    ) -> None:
        self.max_connections = max_connections
        self.settings = settings or {}
        self.port = 0
        self.tmp: Path | None = None
        self._run_as: str | None = None

    @property
    def socket_dir(self) -> Path:
        assert self.tmp is not None
        return self.tmp

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def unix_dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def start(self) -> str:
        bindir = find_bindir()
        if os.geteuid() == 0:
            for user in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(user)
                    self._run_as = user
                    break
            if self._run_as is None:
                raise PostgresNotFoundError(
                    "running as root and no 'postgres' user to run initdb as"
                )
        self.tmp = Path(tempfile.mkdtemp(prefix="psycogreen-pg-"))
        if self._run_as:
            shutil.chown(self.tmp, user=self._run_as)
        data = self.tmp / "data"
        log = self.tmp / "server.log"
        out = subprocess.run(
            self._cmd(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if out.returncode:
            self._cleanup()
            raise RuntimeError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tmp),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
            "shared_buffers": "64MB",
            **self.settings,
        }
        for attempt in range(5):
            self.port = _free_port()
            opts = " ".join(f"-c {k}={v}" for k, v in options.items())
            self._start_args = self._cmd(
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port} {opts}",
                "start",
            )
            out = subprocess.run(
                self._start_args,
                capture_output=True,
                text=True,
                check=False,
                timeout=90,
            )
            if out.returncode == 0:
                self._bindir = bindir
                atexit.register(self.stop)
                return self.dsn
            if attempt == 4:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self._cleanup()
                raise RuntimeError(f"pg_ctl start failed:\n{out.stdout}\n{out.stderr}\n{tail}")
        raise AssertionError("unreachable")

    def restart_commands(self) -> tuple[list[str], list[str]]:
        """The commands that stop the running server (``-m fast``: sessions are terminated) and
        start it again on the same port and data, for a test of a server restart."""
        assert self.tmp is not None
        stop = self._cmd(str(self._bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m")
        return [*stop, "fast", "-w", "stop"], list(self._start_args)

    def stop(self) -> None:
        if self.tmp is None:
            return
        data = self.tmp / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                self._cmd(
                    str(self._bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"
                ),
                capture_output=True,
                check=False,
                timeout=60,
            )
        self._cleanup()

    def _cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


@contextlib.contextmanager
def throwaway_postgres(**kwargs: object) -> Iterator[ThrowawayPostgres]:
    """Start a throwaway server for the duration of the block."""
    server = ThrowawayPostgres(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
