# SPDX-License-Identifier: BSD-3-Clause
"""Run a program in a child process and read its JSON result from the last line of its stdout.

The one runner for everything that needs a fresh process (a monkey-patched scenario, a
benchmark variant, a demo mode): one scheduler per process, and a result that survives
whatever the child printed before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["ROOT", "SOURCES", "ChildFailedError", "child_env", "run_json"]

ROOT = Path(__file__).resolve().parents[2]
#: The packages' source folders, for a child that imports the checkout rather than the
#: installed distributions (a benchmark run outside its hatch environment).
SOURCES = tuple(ROOT / "packages" / name / "src" for name in ("core", "gevent", "eventlet"))


class ChildFailedError(RuntimeError):
    """The child exited non-zero, timed out, or printed no JSON result; the message has its output."""

    def __init__(
        self,
        what: str,
        stdout: str,
        stderr: str,
        *,
        summary: str,
        returncode: int | None,
    ) -> None:
        """Describe the failure ``what`` with the last lines of the child's output."""
        super().__init__(f"{what}\n--- stdout\n{_tail(stdout)}\n--- stderr\n{_tail(stderr)}")
        self.stdout = stdout
        self.stderr = stderr
        #: One line for a report (``exit 1: ValueError: ...``, ``timed out after 60 s``).
        self.reason = summary
        #: The child's exit status; ``None`` when it was killed for running past its timeout.
        self.returncode = returncode


def _tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines, whole (never cut mid-line)."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def child_env(
    extra: Mapping[str, str] | None = None,
    paths: Sequence[Path] = (),
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    """This process's environment for a child.

    Without the variables whose names start with one of ``drop``, with ``paths`` and the
    repository importable, and ``extra`` on top.
    """
    inherited = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    path = os.pathsep.join(filter(None, [*map(str, paths), str(ROOT), inherited.get("PYTHONPATH")]))
    return {**inherited, "PYTHONPATH": path, **(extra or {})}


def run_json(
    args: Sequence[object],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    python: str | None = None,
    paths: Sequence[Path] = (),
    drop: tuple[str, ...] = (),
    inherit: bool = True,
    cwd: Path = ROOT,
    while_running: Callable[[], object] | None = None,
) -> Any:
    """Run ``python args...`` (from ``cwd``) and return the JSON of its last line of output.

    The child's environment is :func:`child_env`'s (``env`` on top), or with ``inherit=False``
    ``env`` alone, as it is. Its output goes to files, never to a pipe that could fill and
    stall it; ``while_running`` is called every 0.1 s until it exits (a progress display).
    The child is killed past ``timeout`` seconds, and when this process is interrupted.

    :raises ChildFailedError: the child failed; the message carries its output's last lines.
    """
    argv = [str(arg) for arg in args]
    command = [python or sys.executable, *argv]
    environment = child_env(env, paths, drop) if inherit else dict(env or {})
    with _output() as out, _output() as err:
        proc = subprocess.Popen(
            command, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        returncode = _wait(proc, timeout, while_running)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode is None:
        what = f"{' '.join(argv)}: no result within {timeout:g} s"
        summary = f"timed out after {timeout:g} s"
        raise ChildFailedError(what, stdout, stderr, summary=summary, returncode=None)
    if returncode != 0:
        what = f"{' '.join(argv)} exited {returncode}"
        summary = f"exit {returncode}: {_tail(stderr, 1) or _tail(stdout, 1) or '?'}"
        raise ChildFailedError(what, stdout, stderr, summary=summary, returncode=returncode)
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        what = f"{' '.join(argv)} printed no JSON result"
        raise ChildFailedError(
            what, stdout, stderr, summary="no JSON result", returncode=0
        ) from exc


def _output() -> IO[str]:
    """A file for one of the child's output streams (text, whatever bytes it writes)."""
    return tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")


def _wait(
    proc: subprocess.Popen[bytes], timeout: float, while_running: Callable[[], object] | None
) -> int | None:
    """The child's exit status, or ``None`` once it ran past ``timeout`` (it is then killed)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()  # the child this module started
                proc.wait()
                return None
            try:
                return proc.wait(min(remaining, 0.1) if while_running else remaining)
            except subprocess.TimeoutExpired:
                if while_running is not None:
                    while_running()
    except BaseException:
        proc.kill()  # interrupted: the child this module started goes too
        proc.wait()
        raise
