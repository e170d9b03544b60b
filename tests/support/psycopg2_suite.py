# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2's own test suite, for the installed psycopg2, fetched at test time.

The suite is not part of this repository: the sdist of the installed psycopg2 version holds
it (``tests/``), and is downloaded once into ``.tmp/`` with pip. Its ``tests`` package is
unpacked as ``psycopg2_tests`` (its modules import each other relatively), so that it does not
collide with this project's own ``tests`` package.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support.legacy import pip_command

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tmp" / "psycopg2-suite"
PACKAGE = "psycopg2_tests"


def installed_version() -> str:
    """The version of the psycopg2 this interpreter imports (``psycopg2`` or ``-binary``)."""
    import psycopg2

    # psycopg2.__version__ is "2.9.13 (dt dec pq3 ext lo64)"; the distribution may be either.
    return str(psycopg2.__version__).split()[0]


def suite_dir(version: str | None = None) -> Path:
    """The directory holding ``psycopg2_tests/`` for ``version`` (downloaded on first use).

    The sdist is psycopg2's whatever the installed distribution is called: psycopg2-binary's
    is built from the same source, tests included.
    """
    version = version or installed_version()
    base = CACHE / version
    target = base / PACKAGE
    if (target / "__init__.py").exists():
        return base
    base.mkdir(parents=True, exist_ok=True)
    sdist = base / f"psycopg2-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                *pip_command(),
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(base),
                f"psycopg2=={version}",
            ],
            check=True,
            timeout=300,
        )
    prefix = f"psycopg2-{version}/tests/"
    staging = base / "staging"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        if not members:
            message = f"{sdist.name} holds no tests/ directory"
            raise RuntimeError(message)
        for member in members:
            member.name = PACKAGE + "/" + member.name.removeprefix(prefix)
            tar.extract(member, staging, filter="data")
    (staging / PACKAGE).rename(target)  # whole or not at all: a later run never sees half
    staging.rmdir()
    return base


if __name__ == "__main__":
    print(suite_dir(sys.argv[1] if len(sys.argv) > 1 else None))
