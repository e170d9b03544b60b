# SPDX-License-Identifier: BSD-3-Clause
"""COPY benchmark: psycogreen's cooperative COPY against psycopg2's own, blocking COPY.

    python bench/copy.py [--rows 1000000] [--rounds 5] [--dsn DSN] [--profile]

Prints Markdown: for text and binary COPY TO (table -> BytesIO) and COPY FROM (bytes -> table),
the median wall time of psycopg2's ``copy_expert`` with no wait callback (the baseline) and
of ``copy_expert`` on a patched gevent or eventlet process (psycogreen's COPY), the ratio of
each to the baseline, the worst stall of a 10 ms heartbeat during the green COPY, and the
client CPU per row. ``--profile`` adds a cProfile of the green COPY TO, where per-row foreign
calls are the cost.

Every measurement runs in a process of its own (one scheduler per process), the variants
alternating within each round so that load from elsewhere hits them alike. The source table
(int, md5 text, numeric: about 47 MB as text for 1M rows) is created once and kept;
COPY FROM goes into a table truncated in the same transaction, then rolled back.

The DSN: ``--dsn``, else ``PSYCOGREEN_BENCH_DSN`` or ``PSYCOGREEN_TEST_DSN``, else a throwaway
server from ``tests/support/postgres.py`` (needs the PostgreSQL server binaries).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file is named like the
# standard library's ``copy`` module, which gevent, eventlet and psycopg2 import: drop it.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

CHILD = len(sys.argv) > 2 and sys.argv[1] == "--child"
VARIANT = sys.argv[2] if CHILD else ""

if VARIANT == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif VARIANT == "eventlet":
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet

    eventlet.monkey_patch()

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC = "psycogreen_bench_copy_src"
DST = "psycogreen_bench_copy_dst"
FORMATS = {"text": "", "binary": "(FORMAT binary)"}
VARIANTS = ("blocking", "gevent", "eventlet")


# ------------------------------------------------------------------------------------------
# child: one variant, one format


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


def child(variant: str, fmt: str, dsn: str, profile: bool) -> dict[str, Any]:
    import psycopg2

    from psycogreen.core import copy_expert

    if variant == "gevent":
        import gevent

        import psycogreen.gevent

        psycogreen.gevent.patch_psycopg()
        sleep, spawn = gevent.sleep, gevent.spawn
    elif variant == "eventlet":
        import eventlet

        import psycogreen.eventlet

        psycogreen.eventlet.patch_psycopg()
        sleep, spawn = eventlet.sleep, eventlet.spawn
    else:
        sleep = spawn = None
    opts = FORMATS[fmt]
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}

    def timed(name: str, sql: str, file: Any) -> None:
        hb = Heartbeat(sleep, spawn) if spawn else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profile:
            import cProfile
            import pstats

            wrap_libpq()
            prof = cProfile.Profile()
            rows = prof.runcall(copy_expert, cur, sql, file)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(8)
            out[f"{name}_profile"] = text.getvalue()
        else:
            rows = copy_expert(cur, sql, file)  # psycopg2's own when no callback is installed
        out[f"{name}_wall"] = time.perf_counter() - wall
        out[f"{name}_cpu"] = time.process_time() - cpu
        out[f"{name}_gap_ms"] = hb.stop() if hb else None
        out[f"{name}_rows"] = rows

    sink = io.BytesIO()
    timed("to", f"COPY {SRC} TO STDOUT {opts}", sink)
    data = sink.getvalue()
    out["bytes"] = len(data)
    cur.execute(f"TRUNCATE {DST}")
    timed("from", f"COPY {DST} FROM STDIN {opts}", io.BytesIO(data))
    conn.rollback()
    conn.close()
    return out


def wrap_libpq() -> None:
    """Route the libpq functions COPY calls through Python functions named after them.

    cProfile does not see calls of ctypes functions, so their time would show as the COPY
    loop's own; wrapped, each gets a line (the wrapper adds its own call overhead to it).
    """
    from psycogreen.core import _copy_libpq

    lib = _copy_libpq.load()
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


def run_child(variant: str, fmt: str, dsn: str, *, profile: bool = False) -> dict[str, Any]:
    path = os.pathsep.join(
        [str(ROOT / "packages" / p / "src") for p in ("core", "gevent", "eventlet")]
        + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant, fmt, dsn, "1" if profile else "0"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
        timeout=600,
    )
    if proc.returncode:
        raise RuntimeError(f"{variant} {fmt} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
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
    import psycopg2.extensions

    from psycogreen.core import _copy_libpq

    greens = [s for s in args.schedulers.split(",") if s]
    variants = ["blocking", *greens]
    setup(dsn, args.rows)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        for fmt in FORMATS:
            order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
            for variant in order:
                results.setdefault((variant, fmt), []).append(run_child(variant, fmt, dsn))

    def med(variant: str, fmt: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant, fmt])

    def ratio(variant: str, fmt: str, key: str) -> float:
        # Per round, against the baseline of the same round (measured moments apart): load
        # from elsewhere on the machine drifts more between rounds than within one.
        pairs = zip(results[variant, fmt], results["blocking", fmt], strict=True)
        return statistics.median(green[key] / base[key] for green, base in pairs)

    def worst(variant: str, fmt: str, key: str) -> float:
        return max(r[key] for r in results[variant, fmt])

    lib = _copy_libpq.load()
    conn = psycopg2.connect(dsn)
    server_version = conn.server_version
    conn.close()
    print(f"## COPY, {args.rows:,} rows (int, text, numeric), median of {args.rounds} rounds\n")
    print(
        "Times are medians; a ratio is the median of the per-round ratios to psycopg2's own "
        "blocking COPY; the worst gap is the longest a 10 ms heartbeat greenlet waited beyond "
        "its 10 ms, over all rounds.\n"
    )
    print(
        f"Python {sys.version.split()[0]}, psycopg2 {psycopg2.__version__.split()[0]}, libpq "
        f"{lib.version}, server {server_version}; "
        f"{results['blocking', 'text'][0]['bytes']:,} bytes as text.\n"
    )
    header = "| format | direction | psycopg2 blocking (s) |"
    rule = "|---|---|---:|"
    for green in greens:
        header += f" {green} (s) | ratio | worst gap (ms) |"
        rule += "---:|---:|---:|"
    print(header)
    print(rule)
    for fmt in FORMATS:
        for direction, key in (("COPY TO", "to"), ("COPY FROM", "from")):
            base = med("blocking", fmt, f"{key}_wall")
            line = f"| {fmt} | {direction} | {base:.3f} |"
            for green in greens:
                wall = med(green, fmt, f"{key}_wall")
                gap = worst(green, fmt, f"{key}_gap_ms")
                line += f" {wall:.3f} | {ratio(green, fmt, f'{key}_wall'):.2f}x | {gap:.0f} |"
            print(line)
    print("\nClient CPU per row (µs, median), where the difference comes from:\n")
    header = "| format | direction | psycopg2 blocking |" + "".join(f" {g} |" for g in greens)
    print(header)
    print("|---|---|---:|" + "---:|" * len(greens))
    for fmt in FORMATS:
        for direction, key in (("COPY TO", "to"), ("COPY FROM", "from")):
            rows = args.rows
            line = (
                f"| {fmt} | {direction} | {med('blocking', fmt, f'{key}_cpu') / rows * 1e6:.2f} |"
            )
            for green in greens:
                line += f" {med(green, fmt, f'{key}_cpu') / rows * 1e6:.2f} |"
            print(line)
    if args.profile and greens:
        prof = run_child(greens[0], "text", dsn, profile=True)
        print(f"\ncProfile of a {greens[0]} text COPY TO (profiling slows it down):\n")
        print("```")
        lines = prof["to_profile"].strip().splitlines()
        print("\n".join(line.rstrip() for line in lines if line.strip()))
        print("```")


if __name__ == "__main__":
    if CHILD:
        _, _, variant, fmt, dsn, profile = sys.argv
        print(json.dumps(child(variant, fmt, dsn, profile == "1")))
    else:
        sys.path.insert(0, str(ROOT / "packages" / "core" / "src"))
        main()
