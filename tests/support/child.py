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

__all__ = ["ROOT", "ChildFailedError", "child_env", "run_json"]

ROOT = Path(__file__).resolve().parents[2]


class ChildFailedError(RuntimeError):
    """The child exited non-zero, timed out, or printed no JSON result; the message has its output."""

    def __init__(self, what: str, stdout: str, stderr: str) -> None:
        """Describe the failure ``what`` with the last lines of the child's output."""
        super().__init__(f"{what}\n--- stdout\n{_tail(stdout)}\n--- stderr\n{_tail(stderr)}")
        self.stdout = stdout
        self.stderr = stderr


def _tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines, whole (never cut mid-line)."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with the repository importable and ``extra`` on top."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run_json(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    python: str | None = None,
) -> Any:
    """Run ``python args...`` from the repository root and return the JSON of its last line.

    :raises ChildFailedError: the child failed; the message carries its output's last lines.
    """
    command = [python or sys.executable, *args]
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            env=child_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise ChildFailedError(
            f"{' '.join(args)}: no result within {timeout:g} s", out, err
        ) from exc
    if proc.returncode != 0:
        what = f"{' '.join(args)} exited {proc.returncode}"
        raise ChildFailedError(what, proc.stdout, proc.stderr)
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise ChildFailedError(
            f"{' '.join(args)} printed no JSON result", proc.stdout, proc.stderr
        ) from exc
