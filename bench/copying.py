# SPDX-License-Identifier: BSD-3-Clause
"""COPY benchmark: psycogreen's cooperative COPY against psycopg2's own, blocking COPY.

    python bench/copying.py [--rows 1000000] [--rounds 5] [--dsn DSN] [--profile]

Prints a Markdown table: for text and binary COPY TO (table -> BytesIO) and COPY FROM
(bytes -> table), the median wall time of psycopg2's own ``copy_expert`` with no wait callback
(the baseline) and of psycogreen's cooperative COPY (``copy_expert`` in a patched process),
their ratio, the worst stall of a 10 ms heartbeat greenlet during psycogreen's COPY, and the
client CPU per row of each. ``--profile`` adds a cProfile of psycogreen's COPY TO, where the
per-row foreign calls are the cost.

One process per scheduler and format (gevent's and eventlet's monkey-patching cannot share a
process) alternates the two COPYs round by round, each on a connection of its own making
(psycopg2's own COPY expects libpq's blocking mode, in which a connection made without a wait
callback is), so that load from elsewhere on the machine hits both alike. The source table
(int, md5 text, numeric: about 47 MB as text for 1M rows) is created once and kept; COPY FROM
goes into a table truncated in the same transaction, then rolled back.

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
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.support.child import SOURCES, run_json  # noqa: E402

SRC = "psycogreen_bench_copy_src"
DST = "psycogreen_bench_copy_dst"
FORMATS = {"text": "", "binary": "(FORMAT binary)"}


# ------------------------------------------------------------------------------------------
# child: one scheduler, one format


class Heartbeat:
    def __init__(self, sleep: Any, spawn: Any) -> None:
        self.sleep = sleep
        self.gaps: list[float] = []
        self.running = True
        self.task = spawn(self.run)

    def run(self) -> None:
        last = time.perf_counter()
        while self.running:
            self.sleep(0.01)
            now = time.perf_counter()
            self.gaps.append(now - last - 0.01)
            last = now

    def stop(self) -> float:
        self.running = False
        self.sleep(0.02)
        return max(self.gaps, default=0.0) * 1000


def child(variant: str, fmt: str, dsn: str, rounds: int, profile: bool) -> dict[str, Any]:
    """``rounds`` pairs of COPY TO and FROM: psycopg2's own with no callback, psycogreen's."""
    import psycopg2
    import psycopg2.extensions

    from psycogreen.core import copy_expert

    if variant == "gevent":
        import gevent

        import psycogreen.gevent as backend

        sleep, spawn = gevent.sleep, gevent.spawn
    else:
        import eventlet

        import psycogreen.eventlet as backend

        sleep, spawn = eventlet.sleep, eventlet.spawn
    psycopg2.extensions.set_wait_callback(None)  # eventlet.monkey_patch() installs its own
    # Each mode on a connection of its own making: psycopg2 puts a connection made under a
    # wait callback in libpq's non-blocking mode, and its own COPY expects blocking mode.
    blocking = psycopg2.connect(dsn)
    backend.patch_psycopg()
    green = psycopg2.connect(dsn)
    opts = FORMATS[fmt]
    out: dict[str, Any] = {"blocking": [], "green": []}

    def timed(mode: str, sql: str, file: Any, cur: Any) -> dict[str, Any]:
        if mode == "blocking":
            psycopg2.extensions.set_wait_callback(None)
        else:
            backend.patch_psycopg()
        hb = Heartbeat(sleep, spawn) if mode == "green" else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profile:
            import cProfile
            import pstats

            wrap_libpq()
            prof = cProfile.Profile()
            rows = prof.runcall(copy_expert, cur, sql, file)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
            out.setdefault("profile", text.getvalue())  # the first: COPY TO
        else:
            rows = copy_expert(cur, sql, file)  # psycopg2's own when no callback is installed
        return {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "gap_ms": hb.stop() if hb else None,
            "rows": rows,
        }

    for rnd in range(rounds):
        modes = ("blocking", "green") if rnd % 2 == 0 else ("green", "blocking")
        if profile:
            modes = ("green",)
        for mode in modes:
            conn = blocking if mode == "blocking" else green
            cur = conn.cursor()
            sink = io.BytesIO()
            result = {"to": timed(mode, f"COPY {SRC} TO STDOUT {opts}", sink, cur)}
            data = sink.getvalue()
            out["bytes"] = len(data)
            cur.execute(f"TRUNCATE {DST}")
            result["from"] = timed(mode, f"COPY {DST} FROM STDIN {opts}", io.BytesIO(data), cur)
            conn.rollback()
            out[mode].append(result)
    return out


def wrap_libpq() -> None:
    """Route the libpq functions COPY calls through Python functions named after them.

    cProfile does not see calls of ctypes functions, so their time would show as the COPY
    loop's own; wrapped, each gets a line (the wrapper adds its own call overhead to it).
    """
    from psycogreen.core import _libpq

    lib = _libpq.load_copy()
    for attr in ("fast_PQgetlineAsync", "fast_PQgetCopyData", "fast_PQfreemem", "PQconsumeInput"):
        func = getattr(lib, attr)
        if func is None:
            continue
        name = attr.removeprefix("fast_")
        code = f"def {name}(*args):\n    return func(*args)\n"
        namespace: dict[str, Any] = {"func": func}
        exec(compile(code, f"<libpq {name}>", "exec"), namespace)
        setattr(lib, attr, namespace[name])


# ------------------------------------------------------------------------------------------
# parent


def setup(dsn: str, rows: int) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (SRC,))
    if cur.fetchone()[0]:
        cur.execute(f"SELECT count(*) FROM {SRC}")
        if cur.fetchone()[0] == rows:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {DST} (LIKE {SRC})")
            return
        cur.execute(f"DROP TABLE {SRC}")
    cur.execute(
        f"CREATE TABLE {SRC} AS SELECT g AS a, md5(g::text) AS b, g * 1.5 AS c "
        "FROM generate_series(1, %s) g",
        (rows,),
    )
    cur.execute(f"VACUUM ANALYZE {SRC}")
    cur.execute(f"DROP TABLE IF EXISTS {DST}")
    cur.execute(f"CREATE TABLE {DST} (LIKE {SRC})")
    conn.close()


def run_child(
    variant: str, fmt: str, dsn: str, rounds: int, *, profile: bool = False
) -> dict[str, Any]:
    args = [__file__, "--child", variant, fmt, dsn, rounds, int(profile)]
    result: dict[str, Any] = run_json(args, paths=SOURCES, timeout=1800)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dsn")
    parser.add_argument("--schedulers", default="gevent,eventlet")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of COPY TO")
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


def report(dsn: str, args: argparse.Namespace) -> None:
    import psycopg2

    from psycogreen.core import _libpq

    greens = [s for s in args.schedulers.split(",") if s]
    setup(dsn, args.rows)
    results = {(g, fmt): run_child(g, fmt, dsn, args.rounds) for g in greens for fmt in FORMATS}

    def med(green: str, fmt: str, mode: str, direction: str, key: str) -> float:
        return statistics.median(r[direction][key] for r in results[green, fmt][mode])

    def ratio(green: str, fmt: str, direction: str) -> float:
        # Per round, against the blocking COPY of the same round, moments apart: load from
        # elsewhere on the machine drifts more between rounds than within one.
        pairs = zip(results[green, fmt]["green"], results[green, fmt]["blocking"], strict=True)
        return statistics.median(g[direction]["wall"] / b[direction]["wall"] for g, b in pairs)

    lib = _libpq.load_copy()
    conn = psycopg2.connect(dsn)
    server_version = conn.server_version
    conn.close()
    size = results[greens[0], "text"]["bytes"]
    print(f"## COPY, {args.rows:,} rows (int, text, numeric), {args.rounds} rounds\n")
    print(
        f"Python {sys.version.split()[0]}, psycopg2 {psycopg2.__version__.split()[0]}, libpq "
        f"{lib.version}, server {server_version}; {size:,} bytes as text. Each scheduler's "
        "process alternates psycopg2's own blocking COPY (no wait callback, a connection made "
        "without one) and psycogreen's COPY (patched, a connection made patched). Times are "
        "medians; a ratio is the median of the per-round ratios; the worst gap is the longest "
        "a greenlet ticking every 10 ms waited beyond its 10 ms during psycogreen's COPY, over "
        "all rounds (during a blocking COPY it waits for the whole COPY).\n"
    )
    print(
        "| format | direction | scheduler | psycopg2 blocking (s) | psycogreen (s) | ratio "
        "| worst gap (ms) | CPU/row blocking (µs) | CPU/row psycogreen (µs) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for fmt in FORMATS:
        for direction, key in (("COPY TO", "to"), ("COPY FROM", "from")):
            for green in greens:
                base = med(green, fmt, "blocking", key, "wall")
                wall = med(green, fmt, "green", key, "wall")
                gap = max(r[key]["gap_ms"] for r in results[green, fmt]["green"])
                cpu_base = med(green, fmt, "blocking", key, "cpu") / args.rows * 1e6
                cpu = med(green, fmt, "green", key, "cpu") / args.rows * 1e6
                print(
                    f"| {fmt} | {direction} | {green} | {base:.3f} | {wall:.3f} "
                    f"| {ratio(green, fmt, key):.2f}x | {gap:.0f} | {cpu_base:.2f} | {cpu:.2f} |"
                )
    if args.profile and greens:
        prof = run_child(greens[0], "text", dsn, 1, profile=True)
        print(
            f"\ncProfile of psycogreen's text COPY TO under {greens[0]}, the libpq calls wrapped "
            "in Python functions so that they show (profiling slows it down):\n"
        )
        print("```")
        lines = prof["profile"].strip().splitlines()
        print("\n".join(line.rstrip() for line in lines if line.strip()))
        print("```")


if __name__ == "__main__":
    if CHILD:
        _, _, variant, fmt, dsn, rounds, profile = sys.argv
        print(json.dumps(child(variant, fmt, dsn, int(rounds), profile == "1")))
    else:
        sys.path.insert(0, str(ROOT / "packages" / "core" / "src"))
        main()
