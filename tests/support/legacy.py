# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen 1.0.2, the release this project replaces, loaded without installing it.

1.0.2 ships a regular ``psycogreen/__init__.py`` that would shadow the namespace package, so it
is never installed: its sdist is downloaded once into ``.tmp/`` and a module is executed from
its source under the name it had (``psycogreen.gevent``), without entering ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tmp" / "psycogreen-1.0.2"


def _pip() -> list[str]:
    """A pip command: the environment's own, else the copy bundled with the standard library
    (environments made by uv have no pip; a wheel of pip runs as it is)."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    import ensurepip

    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    return [sys.executable, str(bundled[-1] / "pip")]


def legacy_dir() -> Path:
    """The directory holding 1.0.2's ``gevent.py`` and ``eventlet.py`` (downloaded on first use)."""
    target = CACHE / "psycogreen"
    if (target / "gevent.py").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *_pip(),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(CACHE),
            "psycogreen==1.0.2",
        ],
        check=True,
        timeout=300,
    )
    with tarfile.open(CACHE / "psycogreen-1.0.2.tar.gz") as tar:
        for member in tar.getmembers():
            if member.name.startswith("psycogreen-1.0.2/psycogreen/") and member.name.endswith(
                ".py"
            ):
                member.name = member.name.removeprefix("psycogreen-1.0.2/")
                tar.extract(member, CACHE, filter="data")
    return target


def load_legacy(scheduler: str, directory: str | Path | None = None) -> types.ModuleType:
    """Execute 1.0.2's ``psycogreen/<scheduler>.py`` as a module named ``psycogreen.<scheduler>``."""
    path = Path(directory or legacy_dir()) / f"{scheduler}.py"
    module = types.ModuleType(f"psycogreen.{scheduler}")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module
