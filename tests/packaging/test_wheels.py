# SPDX-License-Identifier: BSD-3-Clause
"""Test what ships: build every wheel, install them in a clean venv, import and query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.child import run_json
from tests.support.env import missing

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))

pytestmark = pytest.mark.slow


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for pkg in PACKAGES:
        proc = run(sys.executable, "-m", "hatchling", "build", "-d", out, cwd=pkg)
        assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    python = home / "bin" / "python"
    wheels = sorted(dist.glob("*.whl"))
    # The uWSGI backend only runs inside a uWSGI server; it is installed but imported there.
    proc = run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        *wheels,
        "psycopg2-binary",
        timeout=600,
    )
    if proc.returncode:
        missing(f"installing the wheels failed: {proc.stderr[-2000:]}")
    return python


def test_each_distribution_builds_a_wheel_and_an_sdist(dist: Path) -> None:
    for pkg in PACKAGES:
        name = f"psycogreen_{pkg.name}"
        assert list(dist.glob(f"{name}-*-py3-none-any.whl")), name
        assert list(dist.glob(f"{name}-*.tar.gz")), name


def test_wheels_hold_no_namespace_init(dist: Path) -> None:
    import zipfile

    for wheel in dist.glob("*.whl"):
        names = zipfile.ZipFile(wheel).namelist()
        assert "psycogreen/__init__.py" not in names, wheel
        assert any(n.endswith("py.typed") for n in names), wheel
        assert any("licenses/LICENSE" in n for n in names), wheel


def test_installed_wheels_import_with_their_versions(clean_venv: Path) -> None:
    code = (
        "import json, importlib, importlib.metadata as md\n"
        "out = {}\n"
        "for name in ('core', 'gevent', 'eventlet'):\n"
        "    mod = importlib.import_module('psycogreen.' + name)\n"
        "    out[name] = [mod.__version__, md.version('psycogreen-' + name), mod.__file__]\n"
        "print(json.dumps(out))\n"
    )
    proc = run(clean_venv, "-c", code, cwd="/")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for name, (version, dist_version, path) in out.items():
        assert version == dist_version, name
        assert str(ROOT) not in path  # the installed copy, not the source tree


@pytest.mark.postgres
@pytest.mark.parametrize("sched", ["gevent", "eventlet"])
def test_installed_wheels_run_concurrent_queries(clean_venv: Path, dsn: str, sched: str) -> None:
    """20 concurrent pg_sleep(0.3) from the installed wheels finish in < 0.6 s."""
    # Only the repository on the path (for tests.support): psycogreen from the installed wheels.
    env = {**os.environ, "PSYCOGREEN_TEST_DSN": dsn, "PYTHONPATH": str(ROOT)}
    out = run_json(
        [
            "-m",
            "tests.support.green",
            sched,
            "concurrent_sleep",
            json.dumps({"n": 20, "seconds": 0.3}),
        ],
        python=str(clean_venv),
        env=env,
        inherit=False,
        timeout=120,
    )
    assert out["pids"] == 20
    assert out["wall"] < 0.6, out
