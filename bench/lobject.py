# SPDX-License-Identifier: BSD-3-Clause
"""Large-object benchmark: psycogreen's green ``lobject`` against psycopg2's own, blocking one.

    hatch run bench:python bench/lobject.py [--megabytes 100] [--rounds 3] [--dsn DSN]
                                            [--schedulers gevent,eventlet]

Prints a Markdown table: for a write of ``--megabytes`` MiB of random bytes into a new large
object (one ``lo.write()``) and a read of it back (one ``lo.read()``), the median wall time of
psycopg2's own ``lobject`` with no wait callback (libpq's fast-path calls, blocking) and of
psycogreen's (patched: the server's large-object functions in 1 MiB queries), their ratio, the
worst stall of a 10 ms heartbeat greenlet during psycogreen's, and the client CPU time of each.

One process per scheduler alternates the two round by round, each on a connection of its own
making (psycopg2's blocking calls expect libpq's blocking mode, in which a connection made
without a wait callback is), so that load from elsewhere on the machine hits both alike. Each
round writes a new object, commits, reads it back, checks it and unlinks it.

The DSN: ``--dsn``, else ``PSYCOGREEN_BENCH_DSN`` or ``PSYCOGREEN_TEST_DSN``, else a throwaway
server from ``tests/support/postgres.py`` (needs the PostgreSQL server binaries).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))  # tests.support: the monkey-patching, the child-process runner

CHILD = len(sys.argv) > 2 and sys.argv[1] == "--child"
VARIANT = sys.argv[2] if CHILD else ""

from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for(VARIANT)

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.support.child import SOURCES, run_json  # noqa: E402

MiB = 1 << 20


# ------------------------------------------------------------------------------------------
# child: one scheduler


class Heartbeat:
    """A greenlet ticking every 10 ms: the worst wall-clock and CPU gap between two ticks."""

    def __init__(self, sleep: Any, spawn: Any) -> None:
        self.sleep = sleep
        self.wall = 0.0
        self.cpu = 0.0
        self.running = True
        self.task = spawn(self.run)

    def run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while self.running:
            self.sleep(0.01)
            now, now_cpu = time.perf_counter(), time.thread_time()
            self.wall = max(self.wall, now - last - 0.01)
            self.cpu = max(self.cpu, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    def stop(self) -> tuple[float, float]:
        self.running = False
        self.sleep(0.02)
        return self.wall * 1000, self.cpu * 1000


def child(variant: str, dsn: str, megabytes: int, rounds: int) -> dict[str, Any]:
    """``rounds`` pairs of write-then-read: psycopg2's own with no callback, psycogreen's."""
    import psycopg2
    import psycopg2.extensions

    if variant == "gevent":
        import gevent

        import psycogreen.gevent as backend

        sleep, spawn = gevent.sleep, gevent.spawn
    else:
        import eventlet

        import psycogreen.eventlet as backend

        sleep, spawn = eventlet.sleep, eventlet.spawn
    psycopg2.extensions.set_wait_callback(None)  # eventlet.monkey_patch() installs its own
    blocking = psycopg2.connect(dsn)
    backend.patch_psycopg()
    green = psycopg2.connect(dsn)
    data = os.urandom(megabytes * MiB)
    out: dict[str, Any] = {"blocking": [], "green": [], "chunk": None}

    def timed(mode: str, func: Any) -> tuple[Any, dict[str, Any]]:
        hb = Heartbeat(sleep, spawn) if mode == "green" else None
        wall, cpu = time.perf_counter(), time.process_time()
        value = func()
        result = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        if hb is not None:
            result["gap_ms"], result["cpu_gap_ms"] = hb.stop()
        return value, result

    for rnd in range(rounds):
        modes = ("blocking", "green") if rnd % 2 == 0 else ("green", "blocking")
        for mode in modes:
            if mode == "blocking":
                psycopg2.extensions.set_wait_callback(None)
                conn = blocking
            else:
                backend.patch_psycopg()
                conn = green
            lo = conn.lobject(mode="wb")
            out["class"] = type(lo).__qualname__ if mode == "green" else out.get("class")
            written, write = timed(mode, lambda lo=lo: lo.write(data))
            assert written == len(data), written
            lo.close()
            conn.commit()
            lo = conn.lobject(lo.oid, "rb")
            got, read = timed(mode, lo.read)
            assert got == data, "read back differs"
            del got
            lo.unlink()
            conn.commit()
            out[mode].append({"write": write, "read": read})
    from psycogreen.core import _lobject

    out["chunk"] = _lobject.CHUNK
    return out


# ------------------------------------------------------------------------------------------
# parent


def run_child(variant: str, dsn: str, megabytes: int, rounds: int) -> dict[str, Any]:
    args = [__file__, "--child", variant, dsn, megabytes, rounds]
    result: dict[str, Any] = run_json(args, paths=SOURCES, timeout=3600)
    return result


def report(dsn: str, args: argparse.Namespace) -> None:
    import psycopg2

    greens = [s for s in args.schedulers.split(",") if s]
    results = {g: run_child(g, dsn, args.megabytes, args.rounds) for g in greens}

    def med(green: str, mode: str, op: str, key: str) -> float:
        return statistics.median(r[op][key] for r in results[green][mode])

    def ratio(green: str, op: str) -> float:
        # Per round, against the blocking call of the same round, moments apart.
        pairs = zip(results[green]["green"], results[green]["blocking"], strict=True)
        return statistics.median(g[op]["wall"] / b[op]["wall"] for g, b in pairs)

    conn = psycopg2.connect(dsn)
    server_version = conn.server_version
    conn.close()
    chunk = results[greens[0]]["chunk"] // MiB
    print(f"## Large objects, {args.megabytes} MiB, {args.rounds} rounds\n")
    print(
        f"Python {sys.version.split()[0]}, psycopg2 {psycopg2.__version__.split()[0]}, libpq "
        f"{psycopg2.extensions.libpq_version()}, server {server_version}. Each scheduler's "
        "process alternates psycopg2's own blocking `lobject` (no wait callback, a connection "
        "made without one) and psycogreen's (patched, a connection made patched: "
        f"`{results[greens[0]]['class']}`, {chunk} MiB per query). One `write()` of random "
        "bytes into a new object, then one `read()` of it all. Times are medians; a ratio is "
        "the median of the per-round ratios; the worst gap is the longest a greenlet ticking "
        "every 10 ms waited beyond its 10 ms during psycogreen's call (wall clock), and the "
        "CPU time the process spent between two ticks, over all rounds (during a blocking call "
        "it waits for the whole call).\n"
    )
    print(
        "| operation | scheduler | psycopg2 blocking (s) | psycogreen (s) | ratio | psycogreen "
        "MiB/s | worst gap (ms) | worst CPU gap (ms) | CPU blocking (s) | CPU psycogreen (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op in ("write", "read"):
        for green in greens:
            base = med(green, "blocking", op, "wall")
            wall = med(green, "green", op, "wall")
            gap = max(r[op]["gap_ms"] for r in results[green]["green"])
            cpu_gap = max(r[op]["cpu_gap_ms"] for r in results[green]["green"])
            print(
                f"| {op} | {green} | {base:.2f} | {wall:.2f} | {ratio(green, op):.2f}x "
                f"| {args.megabytes / wall:.0f} | {gap:.0f} | {cpu_gap:.0f} "
                f"| {med(green, 'blocking', op, 'cpu'):.2f} | {med(green, 'green', op, 'cpu'):.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn")
    parser.add_argument("--schedulers", default="gevent")
    args = parser.parse_args()
    dsn = (
        args.dsn or os.environ.get("PSYCOGREEN_BENCH_DSN") or os.environ.get("PSYCOGREEN_TEST_DSN")
    )
    server = None
    if not dsn:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        dsn = server.start()
    try:
        report(dsn, args)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    if CHILD:
        _, _, variant, dsn, megabytes, rounds = sys.argv
        print(json.dumps(child(variant, dsn, int(megabytes), int(rounds))))
    else:
        sys.path.insert(0, str(ROOT / "packages" / "core" / "src"))
        main()
