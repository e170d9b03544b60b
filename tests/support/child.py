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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "SOURCES", "ChildFailedError", "child_env", "run_json"]

ROOT = Path(__file__).resolve().parents[2]
#: The packages' source folders, for a child that imports the checkout rather than the
#: installed distributions (a benchmark run outside its hatch environment).
SOURCES = tuple(ROOT / "packages" / name / "src" for name in ("core", "gevent", "eventlet"))


class ChildFailedError(RuntimeError):
    """The child exited non-zero, timed out, or printed no JSON result; the message has its output."""

    def __init__(self, what: str, stdout: str, stderr: str, *, summary: str) -> None:
        """Describe the failure ``what`` with the last lines of the child's output."""
        super().__init__(f"{what}\n--- stdout\n{_tail(stdout)}\n--- stderr\n{_tail(stderr)}")
        self.stdout = stdout
        self.stderr = stderr
        #: One line for a report (``exit 1: ValueError: ...``, ``timed out after 60 s``).
        self.reason = summary


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
) -> Any:
    """Run ``python args...`` (from ``cwd``) and return the JSON of its last line of output.

    The child's environment is :func:`child_env`'s (``env`` on top), or with ``inherit=False``
    ``env`` alone, as it is.

    :raises ChildFailedError: the child failed; the message carries its output's last lines.
    """
    argv = [str(arg) for arg in args]
    command = [python or sys.executable, *argv]
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=child_env(env, paths, drop) if inherit else dict(env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        what = f"{' '.join(argv)}: no result within {timeout:g} s"
        summary = f"timed out after {timeout:g} s"
        raise ChildFailedError(what, out, err, summary=summary) from exc
    if proc.returncode != 0:
        what = f"{' '.join(argv)} exited {proc.returncode}"
        last = _tail(proc.stderr, 1) or _tail(proc.stdout, 1) or "?"
        summary = f"exit {proc.returncode}: {last}"
        raise ChildFailedError(what, proc.stdout, proc.stderr, summary=summary)
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        what = f"{' '.join(argv)} printed no JSON result"
        summary = "no JSON result"
        raise ChildFailedError(what, proc.stdout, proc.stderr, summary=summary) from exc
