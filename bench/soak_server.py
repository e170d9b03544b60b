# SPDX-License-Identifier: BSD-3-Clause
"""The soak's own throwaway PostgreSQL: started, restarted under load, and removed.

The machine's server binaries (``PSYCOGREEN_PG_BINDIR``, else the newest
``/usr/lib/postgresql/*/bin``, else ``pg_config --bindir``), a temporary data directory, and
127.0.0.1 on a free port plus a unix socket in that directory. ``initdb`` refuses to run as
root: as root every server command runs as the ``postgres`` user (``runuser``), which owns the
directory.

Unlike a server for tests, this one keeps ``synchronous_commit`` on: the soak restarts it
with ``-m immediate`` (a crash, then WAL recovery), and an acknowledged commit must survive
that. ``fsync`` stays off: the operating system does not crash, so what was written to the
WAL is in its page cache.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Server", "find_bindir"]


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if env := os.environ.get("PSYCOGREEN_PG_BINDIR"):
        candidates.append(Path(env))
    candidates.extend(
        sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    for path in candidates:
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    raise FileNotFoundError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install them "
        "(Debian/Ubuntu: apt-get install postgresql) or set PSYCOGREEN_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A PostgreSQL server in a temporary directory, owned by this process."""

    def __init__(self, *, max_connections: int = 300) -> None:
        self.max_connections = max_connections
        self.bindir = find_bindir()
        self.port = 0
        self.tmp: Path | None = None
        self.run_as: str | None = None
        self.restarts = 0

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def data(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    @property
    def log(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "server.log"

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        found = re.search(r"\d+(\.\d+)+", out.stdout)
        return found.group(0) if found else out.stdout.strip()

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def _pg_ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def start(self) -> None:
        if os.geteuid() == 0:
            for user in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(user)
                except KeyError:
                    continue
                self.run_as = user
                break
            else:
                raise RuntimeError("running as root and no unprivileged user to run initdb as")
        self.tmp = Path(tempfile.mkdtemp(prefix="psycogreen-soak-pg-"))
        if self.run_as:
            shutil.chown(self.tmp, user=self.run_as)
        out = subprocess.run(
            self._cmd(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
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
            self.remove()
            raise RuntimeError(f"initdb failed:\n{out.stdout}\n{out.stderr}")
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tmp),
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
            "shared_buffers": "64MB",
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        for attempt in range(5):
            self.port = _free_port()
            out = self._pg_ctl(
                "-l", str(self.log), "-w", "-t", "60", "-o", f"-p {self.port} {opts}", "start"
            )
            if out.returncode == 0:
                return
            if attempt == 4:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                self.remove()
                raise RuntimeError(f"pg_ctl start failed:\n{out.stdout}\n{out.stderr}\n{tail}")

    def restart(self, mode: str) -> float:
        """Stop the server (``fast`` or ``immediate``) and start it again on the same port.

        :return: the seconds it took, until the server accepts connections again.
        """
        started = time.monotonic()
        # pg_ctl restart starts the server with the options of the last start
        # (postmaster.opts): the same port and settings.
        out = self._pg_ctl("-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart")
        if out.returncode:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl restart failed:\n{out.stdout}\n{out.stderr}\n{tail}")
        self.restarts += 1
        return time.monotonic() - started

    def stop(self) -> None:
        if self.tmp is not None and (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", "immediate", "-w", "stop", timeout=60)
        self.remove()

    def remove(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
