# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen 1.0.2, the release this project replaces, loaded without installing it.

1.0.2 ships a regular ``psycogreen/__init__.py`` that would shadow the namespace package, so it
is never installed: its sdist is downloaded once into ``.tmp/`` and a module is executed from
its source under the name it had (``psycogreen.gevent``), without entering ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tmp" / "psycogreen-1.0.2"
#: Where Debian and Ubuntu keep the pip wheel (python3-pip-whl): they remove the standard
#: library's own copy from ensurepip.
SYSTEM_WHEELS = Path("/usr/share/python-wheels")


class LegacyUnavailableError(RuntimeError):
    """psycogreen 1.0.2 cannot be fetched: no pip to fetch it with, or pip failed."""


def _pip_wheels() -> list[Path]:
    """pip wheels outside the environment, newest first: ensurepip's, then the system's."""
    folders = []
    spec = importlib.util.find_spec("ensurepip")
    if spec is not None and spec.origin is not None:
        folders.append(Path(spec.origin).parent / "_bundled")
    folders.append(SYSTEM_WHEELS)
    return [wheel for folder in folders for wheel in sorted(folder.glob("pip-*.whl"), reverse=True)]


def pip_command() -> list[str]:
    """A command that runs pip: the environment's own; else a pip wheel run by this interpreter
    (environments made by uv have no pip; a wheel of pip runs as it is); else a pip on PATH."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if wheels := _pip_wheels():
        return [sys.executable, str(wheels[0] / "pip")]
    for name in ("pip3", "pip"):
        if path := shutil.which(name):
            return [path]
    raise LegacyUnavailableError(
        "no pip to download psycogreen 1.0.2 with: this environment has none, there is no pip "
        "wheel in the standard library's ensurepip (Debian and Ubuntu remove it) nor in "
        "/usr/share/python-wheels, and no pip on PATH; install pip into the environment "
        "(python -m ensurepip), or install python3-pip"
    )


def legacy_dir(cache: Path = CACHE) -> Path:
    """The directory holding 1.0.2's ``gevent.py`` and ``eventlet.py`` (downloaded on first use)."""
    target = cache / "psycogreen"
    if (target / "gevent.py").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        *pip_command(),
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(cache),
        "psycogreen==1.0.2",
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LegacyUnavailableError(f"{' '.join(command)} did not run: {exc}") from exc
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-10:])
        raise LegacyUnavailableError(
            f"{' '.join(command)} exited with status {out.returncode} (is the package index "
            f"reachable?):\n{tail}"
        )
    # The package's own modules only, read out of the archive and written under names made
    # here: nothing in the archive chooses a path (tarfile's extraction filters are missing
    # from some 3.11 builds, Debian 12's among them).
    partial = cache / "psycogreen.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    prefix = "psycogreen-1.0.2/psycogreen/"
    with tarfile.open(cache / "psycogreen-1.0.2.tar.gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            module = name.removesuffix(".py")
            if (
                member.isfile()
                and member.name != name
                and name.endswith(".py")
                and module.isidentifier()
            ):
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                (partial / name).write_bytes(source.read())
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def load_legacy(scheduler: str, directory: str | Path | None = None) -> types.ModuleType:
    """Execute 1.0.2's ``psycogreen/<scheduler>.py`` as a module named ``psycogreen.<scheduler>``."""
    path = Path(directory or legacy_dir()) / f"{scheduler}.py"
    module = types.ModuleType(f"psycogreen.{scheduler}")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module
