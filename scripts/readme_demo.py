#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Run the demo and put what it printed into README.md, between its ``demo-output`` marks.

    scripts/readme_demo.py [demo options]

The block is the demo's output as it is (off a terminal the demo prints what a terminal shows
at the end), under a line naming the machine it ran on. ``tests/docs/test_readme.py`` checks
that the block still has the shape of what the demo prints.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- demo-output: written by scripts/readme_demo.py from a run of scripts/demo -->"
END = "<!-- /demo-output -->"
FENCE = "```"
#: The demo's first line: what comes before it (hatch creating the environment) is not the demo's.
FIRST_LINE = re.compile(r"^(Starting a throwaway PostgreSQL|PostgreSQL \d)")


class ReadmeBlockError(RuntimeError):
    """README.md has no demo-output block, or the demo did not run."""


def machine() -> str:
    """The machine in a few words: cores, CPU, system, and its load when the run started."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = platform.system()
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip().strip('"')
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({cpu}), {system}, load average {load:.2f} at the start"


def demo_output(args: list[str]) -> str:
    """Run ``scripts/demo``, showing its output as it comes; that output from its first line on."""
    lines = []
    command = [str(ROOT / "scripts" / "demo"), *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:  # noqa: S603 (ours)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip())
    if proc.returncode != 0:
        raise ReadmeBlockError(
            f"scripts/demo exited with status {proc.returncode}: README.md is left as it was"
        )
    first = next((i for i, line in enumerate(lines) if FIRST_LINE.match(line)), 0)
    return "\n".join(lines[first:]).strip("\n")


def block(output: str, where: str) -> str:
    """The README's block: the marks, the machine, the output as a code block."""
    return f"{START}\nOne run on {where}:\n\n{FENCE}\n{output}\n{FENCE}\n{END}"


def replace_block(readme: str, new_block: str) -> str:
    """``readme`` with its demo-output block replaced by ``new_block``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(readme):
        raise ReadmeBlockError(
            f"README.md has no block between {START!r} and {END!r}: put both marks back where "
            "the demo's output belongs"
        )
    return pattern.sub(lambda _match: new_block, readme, count=1)


def shown_output(readme: str) -> str:
    """The demo output in README.md's block (the code block between the marks)."""
    pattern = re.compile(
        re.escape(START) + r".*?^" + FENCE + r"\n(.*?)^" + FENCE + r"$.*?" + re.escape(END),
        re.DOTALL | re.MULTILINE,
    )
    match = pattern.search(readme)
    if match is None:
        raise ReadmeBlockError("README.md has no demo-output block with a code block inside")
    return match.group(1).rstrip("\n")


_MEASURED = re.compile(
    r"\d[\d,]*(\.\d+)?( ?(ms|s|x)\b)?"  # counts, durations, ratios, ports and pids
)


def shape(output: str) -> list[str]:
    """The output's lines, every figure replaced by ``#`` and runs of spaces by one space.

    That is what stays the same from one run, and one machine, to the next.
    """
    lines = []
    for line in output.splitlines():
        masked = _MEASURED.sub("#", line)
        lines.append(re.sub(r" {2,}", " ", masked).rstrip())
    return lines


def main(argv: list[str]) -> int:
    """Run the demo with ``argv``; replace the block; 1 (and README.md untouched) on failure."""
    where = machine()
    try:
        output = demo_output(argv)
        text = replace_block(README.read_text(encoding="utf-8"), block(output, where))
    except ReadmeBlockError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    README.write_text(text, encoding="utf-8")
    sys.stderr.write(f"README.md: the demo's output block is now the run above ({where})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
