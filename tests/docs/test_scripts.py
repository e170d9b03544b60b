# SPDX-License-Identifier: BSD-3-Clause
"""The README's entry scripts: ``scripts/test-all``, ``scripts/demo``, ``scripts/hatch``.

``test-all`` runs against a stub hatch that records its calls: every step CI runs, in order; a
Python of the matrix missing from PATH is excluded with a message, or fails the run under
``CI=true``, before hatch could try to download it. The bootstrap of hatch into ``.tools/``
runs for real, with the system's Python (Debian's refuses ``pip install``: PEP 668), in a copy
of ``scripts/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.env import missing

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ("3.10", "3.11", "3.12", "3.13")
# Like hatch, it refuses `test --all` beside a filter of the matrix.
STUB = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Hatch, version 1.18.2"; exit 0; fi
case " $* " in
  *" --all "*" -i "* | *" --all "*" -x "* | *" --all "*" -py "*)
    echo "The --all option cannot be used with the --include or --exclude options."; exit 1 ;;
esac
echo "$*" >> "$HATCH_LOG"
"""


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    """An environment whose hatch is the stub, with no pyenv and a PATH without pyenv's shims."""
    hatch = tmp_path / "hatch"
    hatch.write_text(STUB)
    hatch.chmod(0o755)
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if "pyenv" not in p
    )
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "PYENV_VERSION"}}
    return {
        **env,
        "PATH": path,
        "HATCH": str(hatch),
        "HATCH_LOG": str(tmp_path / "calls"),
        "PSYCOGREEN_NO_PYENV": "1",
    }


def on_path(env: dict[str, str]) -> list[str]:
    return [m for m in MATRIX if shutil.which(f"python{m}", path=env["PATH"])]


def run_test_all(
    env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "test-all"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    log = Path(env["HATCH_LOG"])
    return proc, log.read_text().splitlines() if log.exists() else []


def test_every_step_in_order(stub: dict[str, str]) -> None:
    found = on_path(stub)
    if "3.11" not in found:
        missing("no python3.11 on PATH: the recipes and COPY steps need it")
    proc, calls = run_test_all(stub, "-k", "smoke")
    assert proc.returncode == 0, proc.stderr
    absent = [m for m in MATRIX if m not in found]
    # The whole matrix (--all), or what is left of it once the missing Pythons are excluded.
    if absent:
        matrix = f"test --retries 2 --retry-delay 1 -x python={','.join(absent)} -k smoke"
    else:
        matrix = "test --all --retries 2 --retry-delay 1 -k smoke"
    assert calls == [
        matrix,
        "run recipes:test --reruns 2 --reruns-delay 1",
        "run copy:test --reruns 2 --reruns-delay 1",
        "run conformance:test --reruns 2 --reruns-delay 1",
        "run soak:test",
        "run types:check",
        "run lint:check",
        "run packaging:check",
        "run docs:build",
        "run docs:examples --reruns 2 --reruns-delay 1",
    ]
    assert f"on PATH: {' '.join(found)}" in proc.stderr
    if absent:
        assert f"Skipping Python {' '.join(absent)} here: not on PATH" in proc.stderr


def test_a_missing_python_fails_under_ci(stub: dict[str, str]) -> None:
    absent = [m for m in MATRIX if m not in on_path(stub)]
    if not absent:
        pytest.skip("every Python of the matrix is on this PATH")  # nothing is missing to fail on
    proc, calls = run_test_all({**stub, "CI": "true"}, "--only", "matrix")
    assert proc.returncode == 1
    assert f"CI=true and Python {' '.join(absent)} not on PATH" in proc.stderr
    assert calls == []  # nothing ran, and hatch was never asked to download a Python


def test_a_slice_of_a_missing_python_is_skipped_locally(stub: dict[str, str]) -> None:
    absent = [m for m in MATRIX if m not in on_path(stub)]
    if not absent:
        pytest.skip("every Python of the matrix is on this PATH")
    proc, calls = run_test_all(
        stub, "--only", "matrix", "-i", "backend=gevent", "-i", f"python={absent[0]}"
    )
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    assert "matrix: skipped" in proc.stderr


def test_a_slice_runs_with_retries(stub: dict[str, str]) -> None:
    found = on_path(stub)
    if not found:
        missing("no Python of the matrix on PATH")
    proc, calls = run_test_all(stub, "--only", "matrix,lint", "-py", found[0], "tests/core")
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        f"test --retries 2 --retry-delay 1 -py {found[0]} tests/core",
        "run lint:check",
    ]


def test_an_unknown_step_is_refused(stub: dict[str, str]) -> None:
    proc, calls = run_test_all(stub, "--only", "matrix,typo")
    assert proc.returncode == 2
    assert "unknown step 'typo'" in proc.stderr
    assert calls == []


@pytest.mark.slow
def test_hatch_is_bootstrapped_into_tools(tmp_path: Path) -> None:
    """No hatch on PATH: ``scripts/hatch`` installs one into ``.tools/`` with the system's Python."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        missing(f"{system} does not exist (Debian/Ubuntu: apt-get install python3)")
    if shutil.which("hatch", path="/usr/bin:/bin"):
        pytest.skip("a hatch is installed in /usr/bin: nothing to bootstrap")
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", checkout / "scripts")
    env = {
        k: v for k, v in os.environ.items() if k not in {"HATCH", "PYENV_VERSION", "VIRTUAL_ENV"}
    }
    env |= {"PATH": "/usr/bin:/bin", "PSYCOGREEN_NO_PYENV": "1"}
    proc = subprocess.run(
        [str(checkout / "scripts" / "hatch"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("Hatch, version 1.")
    assert "installing it into .tools/" in proc.stderr
    assert (checkout / ".tools" / ".complete").exists()
    # Found there the next time, without installing again.
    again = subprocess.run(
        [str(checkout / "scripts" / "hatch"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0
    assert "installing" not in again.stderr


def test_the_readme_slices_run_with_retries(stub: dict[str, str]) -> None:
    """Each `scripts/test-all --only ...` line of README.md is valid, and retries its tests."""
    text = (ROOT / "README.md").read_text()
    lines = [
        line.split()[1:] for line in text.splitlines() if line.startswith("scripts/test-all --only")
    ]
    assert lines, "README.md shows no slice"
    found = on_path(stub)
    for args in lines:
        asked = [a.removeprefix("python=") for a in args if a.startswith("python=")]
        if any(v not in found for v in asked):
            continue  # a Python this machine lacks: skipped, as test_a_slice_of_a_missing... checks
        Path(stub["HATCH_LOG"]).unlink(missing_ok=True)
        proc, calls = run_test_all(stub, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert calls, args
        for call in calls:
            if call.startswith("test "):
                assert "--retries 2 --retry-delay 1" in call, call
