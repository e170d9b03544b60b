# SPDX-License-Identifier: BSD-3-Clause
"""A real uWSGI server running ``tests/uwsgi/app.py``, started and stopped by this process.

Servers are started as their own process group and stopped by pid: SIGTERM (with
``--die-on-term``, a graceful stop; SIGQUIT would reload), then SIGKILL to the group if it
lingers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
APP = HERE / "app.py"
APP_NAME = "psycogreen-uwsgi-test"

#: uWSGI's mode flags, by the name the tests use.
MODES: dict[str, list[str]] = {
    "greenlet": ["--async", "20", "--greenlet"],
    "sync": [],
    "threads": ["--threads", "4"],
    "gevent": ["--gevent", "20"],
    "async-no-engine": ["--async", "20"],
    "ugreen": ["--async", "20", "--ugreen"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UwsgiServer:
    """One uWSGI master with one worker, serving the test application over HTTP."""

    def __init__(self, binary: Path, mode: str, dsn: str, tmp: Path) -> None:
        self.mode = mode
        self.port = _free_port()
        self.log = tmp / f"uwsgi-{mode}-{self.port}.log"  # --logto appends: a fresh file
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ,
            "PSYCOGREEN_TEST_DSN": dsn,
            "PSYCOGREEN_TEST_APP_NAME": APP_NAME,
            "PYTHONPATH": path,
        }
        cmd = [
            str(binary),
            "--http-socket",
            f"127.0.0.1:{self.port}",
            "--wsgi-file",
            str(APP),
            "--master",
            "--processes",
            "1",
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            "--logto",
            str(self.log),
            *MODES[mode],
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()

    def log_text(self, offset: int = 0) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"uwsgi ({self.mode}) exited with {self.proc.returncode} at start-up:\n"
                    f"{self.log_text()[-4000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                # The socket is bound by the master; the worker is up once it answers.
                with contextlib.suppress(OSError, http.client.HTTPException):
                    self.get("/mode", timeout=2)
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"uwsgi ({self.mode}) not ready in {timeout} s:\n{self.log_text()[-4000:]}"
        )

    def get(self, path: str, *, timeout: float = 5) -> tuple[int, Any]:
        """``GET path``; the status and the decoded JSON body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)


StartServer = Callable[[str], UwsgiServer]
