# SPDX-License-Identifier: BSD-3-Clause
"""README.md shows what the project does: its commands exist, its demo output is real.

The demo block is written by ``scripts/readme_demo.py`` from a run; here the demo runs again
(small: 10 clients) and its output must have the block's shape, line for line, figures aside;
the block's own figures must agree with each other (queries/s, the ratios to blocking).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.env import require

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_demo() -> ModuleType:
    """``scripts/readme_demo.py``, which writes the block and knows its shape."""
    spec = importlib.util.spec_from_file_location(
        "readme_demo", ROOT / "scripts" / "readme_demo.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_block(text: str) -> list[str]:
    match = re.search(r"^```\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert match is not None, "README.md has no code block"
    return match.group(1).splitlines()


def test_the_first_commands_are_scripts_of_the_repository() -> None:
    commands = [line.split("#")[0].strip() for line in first_block(README.read_text())]
    assert commands == ["scripts/demo", "scripts/test-all"]
    for command in commands:
        path = ROOT / command
        assert path.is_file(), command
        assert os.access(path, os.X_OK), f"{command} is not executable"


def test_every_hatch_script_named_exists() -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 or newer reads hatch.toml")
    config = tomllib.loads((ROOT / "hatch.toml").read_text())
    named = re.findall(r"hatch run (\w[\w-]*):(\w[\w-]*)", README.read_text())
    assert ("docs", "serve") in named  # how to look at the documentation
    for env, script in named:
        assert script in config["envs"][env].get("scripts", {}), f"hatch run {env}:{script}"


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name
)
def test_pip_extras_are_quoted(page: Path) -> None:
    """zsh reads an unquoted ``name[extra]`` as a pattern: ``no matches found``."""
    unquoted = re.findall(r"pip install (?:[\w.=<>-]+ )*[\w.-]+\[[^\]]*\]", page.read_text())
    assert not unquoted, unquoted


@pytest.fixture(scope="module")
def shown() -> str:
    return str(readme_demo().shown_output(README.read_text()))


def test_the_block_names_the_machine() -> None:
    text = README.read_text()
    start = text.index(readme_demo().START)
    assert re.match(r".*\nOne run on \d+ cores \(", text[start:]), text[start : start + 200]


def test_the_block_is_what_the_demo_prints(shown: str) -> None:
    """The demo, run now, prints the block's lines: the same text, other figures."""
    for module in ("gevent", "eventlet", "psycogreen.gevent", "psycogreen.eventlet"):
        require(module)
    tool = readme_demo()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run.py"), "--clients", "10", "--sleep", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def dashes(lines: list[str]) -> list[str]:  # the table's rule is as wide as its columns
        return ["-" if set(line.strip()) == {"-"} else line for line in lines]

    assert dashes(tool.shape(proc.stdout.strip())) == dashes(tool.shape(shown))


def test_the_figures_agree(shown: str) -> None:
    """queries/s is the queries over the wall time, and "vs blocking" the ratio of wall times."""

    def seconds(text: str) -> float:
        value, unit = text.split()
        return float(value) / (1000 if unit == "ms" else 1)

    rows = re.findall(
        r"^  (\S.*?)\s{2,}(\d[\d.]* m?s)\s+(\d[\d.]* m?s)\s+([\d,]+)\s+([\d.]+)x\s+(\d+)\s",
        shown,
        re.MULTILINE,
    )
    assert len(rows) == 5, shown
    done = dict(re.findall(r"^  (\S.*?)\s{2,}(\d+) queries in ", shown, re.MULTILINE))
    walls = {label: seconds(wall) for label, _, wall, *_ in rows}
    blocking = walls["blocking psycopg2, 1 thread"]
    for label, _, _, rate, ratio, _ in rows:
        wall = walls[label]
        # The figures are rounded: 3 significant digits for the times, 1 decimal for the ratio.
        assert float(rate.replace(",", "")) == pytest.approx(int(done[label]) / wall, rel=0.02)
        assert float(ratio) == pytest.approx(blocking / wall, rel=0.03, abs=0.06)
