# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen 1.0.2, which the comparison tests load, can be fetched with the system's Python.

Debian and Ubuntu remove the pip wheels the standard library bundles for ``ensurepip``; an
environment without pip of its own (made by uv, or ``venv --without-pip``) used to fail with
"list index out of range" there, and the comparison tests were skipped. The fetch runs here in
such an environment made from ``/usr/bin/python3``, into a cache of its own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import missing

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")

FETCH = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.support.legacy import legacy_dir, pip_command
print(" ".join(pip_command()))
print(legacy_dir(Path(sys.argv[2])))
"""


@pytest.fixture
def pipless_python(tmp_path: Path) -> Path:
    """The interpreter of an environment without pip, made from the system's Python."""
    if not SYSTEM_PYTHON.exists():
        missing(f"{SYSTEM_PYTHON} does not exist (Debian/Ubuntu: apt-get install python3)")
    home = tmp_path / "env"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(home)], check=True)
    return home / "bin" / "python"


def test_fetch_from_an_environment_without_pip(pipless_python: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = subprocess.run(
        [str(pipless_python), "-c", FETCH, str(ROOT), str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    pip, folder = out.stdout.strip().splitlines()[-2:]
    assert not pip.endswith(" -m pip"), pip  # the environment has none: found elsewhere
    for module in ("gevent.py", "eventlet.py"):
        assert (Path(folder) / module).is_file()
    # 1.0.2's gevent module is the one the comparisons load.
    assert "def gevent_wait_callback" in (Path(folder) / "gevent.py").read_text()
    assert Path(folder) == cache / "psycogreen"


def test_without_any_pip_the_reason_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import legacy

    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    monkeypatch.setattr(legacy, "SYSTEM_WHEELS", Path(sys.prefix) / "no-such-folder")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(legacy.LegacyUnavailableError) as info:
        legacy.pip_command()
    assert "python3-pip" in str(info.value)
    assert "ensurepip" in str(info.value)


def test_the_system_pip_wheel_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.support import legacy

    wheel = tmp_path / "pip-99.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    monkeypatch.setattr(legacy, "SYSTEM_WHEELS", tmp_path)
    assert legacy.pip_command() == [sys.executable, str(wheel / "pip")]
