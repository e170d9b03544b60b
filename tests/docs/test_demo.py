# SPDX-License-Identifier: BSD-3-Clause
"""The demo (``scripts/demo``, the README's first command) runs and shows what it claims.

A small run against the test server: 10 clients whose first query sleeps 0.3 s on the server.
One after the other (blocking, and gevent without psycogreen) that is at least 3 s; with
psycogreen the sleeps overlap. Then: the green modes with CPU hogs beside them (a busy machine
once made eventlet's mode crash on its own progress output), progress on a terminal, and a mode
that fails without taking the other modes' results with it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import require

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "run.py"
CLIENTS = 10
SLEEP = 0.3

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_schedulers()
    out = tmp_path_factory.mktemp("demo") / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            "--dsn",
            dsn,
            "--clients",
            str(CLIENTS),
            "--queries",
            "4",
            "--sleep",
            str(SLEEP),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    document = json.loads(out.read_text())
    document["stdout"] = proc.stdout
    return document


def require_schedulers() -> None:
    for module in ("gevent", "eventlet", "psycogreen.gevent", "psycogreen.eventlet"):
        require(module)


def by_mode(demo: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["mode"]: r for r in demo["results"]}


def test_every_mode_ran_every_query(demo: dict[str, Any]) -> None:
    assert demo["failures"] == []
    results = by_mode(demo)
    assert set(results) == {"blocking", "threads", "gevent", "eventlet", "gevent-unpatched"}
    for mode, r in results.items():
        assert r["errors"] == 0, (mode, r["first_error"])
        assert r["queries"] == CLIENTS * 4, mode


def test_concurrency_where_promised(demo: dict[str, Any]) -> None:
    results = by_mode(demo)
    # One at a time: no scheduler, or a hub that psycopg2 blocks.
    assert results["blocking"]["peak_in_flight"] == 1
    assert results["gevent-unpatched"]["peak_in_flight"] == 1
    assert results["blocking"]["wall"] >= CLIENTS * SLEEP
    assert results["gevent-unpatched"]["wall"] >= CLIENTS * SLEEP
    for mode in ("threads", "gevent", "eventlet"):
        assert results[mode]["peak_in_flight"] > 1, mode
        # The sleeps overlap: far from the serial time (3 s), whatever the machine's load.
        assert results[mode]["wall"] < results["blocking"]["wall"] / 2, (mode, results[mode])


def test_the_heartbeat_tells_a_blocked_hub(demo: dict[str, Any]) -> None:
    results = by_mode(demo)
    # Unpatched, the hub is frozen for at least one whole query; patched, never for that long.
    assert results["gevent-unpatched"]["heartbeat_worst"] >= SLEEP
    assert results["gevent"]["heartbeat_worst"] < SLEEP
    assert results["eventlet"]["heartbeat_worst"] < SLEEP


def test_interruptions(demo: dict[str, Any]) -> None:
    green = demo["interrupts"]["gevent"]
    assert green["scheduler_timeout"]["raised"] == "gevent.Timeout"
    assert green["scheduler_timeout"]["backend_after_200ms"] == "gone"
    kept = green["psycogreen_timeout"]
    assert kept["raised"] == "psycopg2.errors.QueryCanceled"
    assert not kept["connection_closed"]
    assert kept["same_backend_after_rollback"]
    bundled = demo["interrupts"]["eventlet_bundled"]["scheduler_timeout"]
    assert bundled["raised"] == "eventlet.Timeout"
    assert bundled["backend_after_200ms"] == "active: SELECT pg_sleep(5)"


def test_the_report_is_printed(demo: dict[str, Any]) -> None:
    out = demo["stdout"]
    for label in ("blocking psycopg2", "gevent + psycogreen", "eventlet + psycogreen"):
        assert label in out
    assert "queries/s" in out
    assert "worst tick gap" in out
    assert "Interrupting SELECT pg_sleep(5)" in out


# -- a busy machine ----------------------------------------------------------------------------

HOGS = 3  # on a 2-core machine: the load under which eventlet's mode used to crash
HOG_SECONDS = 120  # each hog ends by itself after this, should the test be killed


@pytest.fixture
def cpu_hogs() -> Iterator[None]:
    """Busy loops beside the test, each ending by itself after ``HOG_SECONDS`` at the latest."""
    code = (
        f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    hogs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(HOGS)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_green_modes_beside_cpu_hogs(dsn: str, cpu_hogs: None, tmp_path: Path) -> None:
    """200 clients on gevent and on eventlet, three times, with the CPUs busy elsewhere.

    eventlet greens ``os.write``: the progress output the demo used to write to a pipe yielded
    to the hub, and two greenthreads writing at once crashed the mode ("Second simultaneous
    write on fileno 1"), in 4 runs out of 6 beside three busy loops.
    """
    require_schedulers()
    for run in range(3):
        out = tmp_path / f"run{run}.json"
        command = [sys.executable, str(DEMO), "--dsn", dsn, "--modes", "gevent,eventlet"]
        proc = subprocess.run(
            [*command, "--no-interrupt", "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"run {run}:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
        document = json.loads(out.read_text())
        assert document["failures"] == []
        for result in document["results"]:
            assert result["errors"] == 0, result
            assert result["queries"] == 200 * 4, result


def test_progress_reaches_a_terminal(dsn: str) -> None:
    """On a terminal the mode's line shows the counts as they grow, from a greened process."""
    require_schedulers()
    # Two rounds of sleeps: between them half the queries are done, for 0.5 s.
    command = [sys.executable, str(DEMO), "--dsn", dsn, "--modes", "eventlet", "--no-interrupt"]
    command += ["--clients", "10", "--queries", "8", "--sleep", "0.5"]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the demo has exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    frames = [int(m) for m in re.findall(r"\] (\d+)/80 queries", text)]
    assert any(0 < done < 80 for done in frames), text


def test_a_failed_mode_does_not_hide_the_others(dsn: str, tmp_path: Path) -> None:
    """A mode that crashes is reported as failed, with its traceback's last lines whole; the
    other modes' table and the interruption showcase are still shown; the exit status is 1."""
    require_schedulers()
    broken = tmp_path / "broken" / "eventlet"
    broken.mkdir(parents=True)
    reason = "this eventlet is broken on purpose " + "-" * 200 + " end of the message"
    (broken / "__init__.py").write_text(f"raise RuntimeError({reason!r})\n")
    out = tmp_path / "results.json"
    path = os.pathsep.join(filter(None, [str(broken.parent), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(DEMO), "--dsn", dsn, "--modes", "blocking,eventlet,gevent"]
    proc = subprocess.run(
        [*command, "--clients", "3", "--queries", "2", "--sleep", "0", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    # The table: the modes that ran, with their figures, and the failed one.
    assert any(re.match(r"\s+blocking psycopg2, 1 thread\s+\d+ ms", line) for line in lines)
    assert any(re.match(r"\s+gevent \+ psycogreen\s+\d+ ms", line) for line in lines)
    assert any(
        re.match(r"\s+eventlet \+ psycogreen\s+FAILED \(exit status 1\)", line) for line in lines
    )
    # The traceback's last line, whole, indented under the failure.
    assert f"      RuntimeError: {reason}" in lines
    # The interruption showcase: gevent's part shown, eventlet's reported as failed.
    assert "Interrupting SELECT pg_sleep(5)" in proc.stdout
    assert any("gevent.Timeout after" in line for line in lines)
    assert "! the eventlet part failed (exit status 1)" in proc.stdout
    assert proc.stdout.count(f"RuntimeError: {reason}") == 2
    document = json.loads(out.read_text())
    assert [r["mode"] for r in document["results"]] == ["blocking", "gevent"]
    assert [f["mode"] for f in document["failures"]] == ["eventlet"]
    assert document["failures"][0]["output_tail"][-1] == f"RuntimeError: {reason}"
    assert document["interrupts"]["gevent"]["psycogreen_timeout"]["same_backend_after_rollback"]
    assert document["interrupts"]["eventlet_bundled"]["failed"] == "exit status 1"
