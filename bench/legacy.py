# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen 1.0.2, the release this project replaces, loaded under another name.

1.0.2 installs the same ``psycogreen`` import name as this project, so it cannot share an
environment with it. Its sdist (pure Python: ``psycogreen/gevent.py`` and
``psycogreen/eventlet.py``) is fetched once with pip into ``bench/.cache`` and its two modules
are executed as ``psycogreen_legacy.gevent`` and ``psycogreen_legacy.eventlet``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

VERSION = "1.0.2"
CACHE = Path(__file__).resolve().parent / ".cache" / f"psycogreen-{VERSION}"
MODULES = ("gevent", "eventlet")


def _pip() -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, check=False
    )
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    import shutil

    for name in ("pip3", "pip"):
        if path := shutil.which(name):
            return [path]
    raise RuntimeError("pip is needed once to fetch psycogreen 1.0.2 into bench/.cache")


def ensure() -> Path:
    """Fetch psycogreen 1.0.2's modules into the cache (once) and return their folder."""
    if all((CACHE / f"{name}.py").exists() for name in MODULES):
        return CACHE
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                *_pip(),
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                tmp,
                f"psycogreen=={VERSION}",
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("psycogreen-*.tar.gz")
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for name in MODULES:
                member = tar.extractfile(f"psycogreen-{VERSION}/psycogreen/{name}.py")
                assert member is not None
                (CACHE / f"{name}.py").write_bytes(member.read())
    return CACHE


def load(name: str) -> types.ModuleType:
    """Import psycogreen 1.0.2's ``name`` module (``gevent`` or ``eventlet``) as ``psycogreen_legacy.<name>``."""
    folder = ensure()
    package = sys.modules.setdefault("psycogreen_legacy", types.ModuleType("psycogreen_legacy"))
    package.__path__ = []  # a package, so that the submodule's name is importable
    path = folder / f"{name}.py"
    module = types.ModuleType(f"psycogreen_legacy.{name}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    setattr(package, name, module)
    return module


if __name__ == "__main__":
    print(ensure())
