# SPDX-License-Identifier: BSD-3-Clause
# The report prints multiplication signs, en dashes and µs; sys.path takes plain strings.
# ruff: noqa: RUF001, RUF002, PTH100, PTH118, PTH120
"""The benchmark suite: ``hatch run bench:run [--quick] [--sections ...] [--docs]``.

Every measurement runs in a process of its own (``bench/variants.py``), one variant at a time.
Rounds are interleaved: round r runs every variant once, in an order rotated by r, so that
load from elsewhere on the machine falls on all variants alike. Each figure is reported as the
median over rounds with the min–max spread, and as ratios to baselines measured in the same
rounds (each round's ratio, then their median and spread). No figure is an absolute bound.

The server: ``--dsn``, else ``PSYCOGREEN_BENCH_DSN``, else a throwaway PostgreSQL started for
the run (``tests/support/postgres.py``, needs the PostgreSQL server binaries). The report is
printed, saved under ``bench/results/`` with the raw JSON, and with ``--docs`` written to
``docs/benchmarks.md``.
"""

from __future__ import annotations

import os.path
import sys

# bench/ holds a copy.py, named like the standard library module: keep this folder off the
# front of sys.path.
HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    del sys.path[0]
ROOT = os.path.dirname(HERE)
sys.path.append(HERE)
sys.path.append(ROOT)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

LEGACY = {"gevent": "legacy-gevent", "eventlet": "legacy-eventlet"}
LABELS = {
    "floor": "bare poll() loop, no library",
    "blocking": "psycopg2, blocking (no callback)",
    "threads": "psycopg2, native threads",
    "core": "psycogreen core callback (poll(2))",
    "legacy-gevent": "psycogreen 1.0.2, gevent",
    "gevent": "**psycogreen-gevent**",
    "legacy-eventlet": "psycogreen 1.0.2, eventlet",
    "eventlet": "**psycogreen-eventlet**",
    "gevent-sub": "psycogreen-gevent, a no-op events subscriber",
    "gevent-timed": "psycogreen-gevent, per-wait timing (no-op subscriber)",
    "eventlet-sub": "psycogreen-eventlet, a no-op events subscriber",
    "eventlet-timed": "psycogreen-eventlet, per-wait timing (no-op subscriber)",
    "psycopg3-gevent": "psycopg 3, gevent",
    "asyncpg-uvloop": "asyncpg, uvloop",
    "pgbench": "pgbench (C, floor)",
}
GREEN_PAIR = ["legacy-gevent", "gevent", "legacy-eventlet", "eventlet"]
# The backends with an events subscriber (section 1): what observing costs a wait.
SUBSCRIBED = ["gevent-sub", "gevent-timed", "eventlet-sub", "eventlet-timed"]


@dataclass
class Section:
    key: str
    title: str
    text: str
    variants: list[str]
    metric: str  # the figure ratios are taken of
    columns: list[tuple[str, str, str]]  # (result key, header, format)
    baseline: str | None
    full: dict[str, Any]
    quick: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    quick_cases: list[dict[str, Any]] | None = None
    rounds: int = 3
    quick_rounds: int = 2


SECTIONS = [
    Section(
        "perwait",
        "1. Per-wait cost of the callback, server-free",
        "A real psycopg2 connection object whose `poll()` answers POLL_READ then POLL_OK and "
        "whose `fileno()` is an always-readable socket: one call = two polls + one full trip "
        "through the scheduler. CPU time per call (the stable figure), wall time beside it. "
        "The `-sub` and `-timed` variants subscribe a no-op function to psycogreen's events, "
        "without and with per-wait timing.",
        ["floor", "core", *GREEN_PAIR, *SUBSCRIBED],
        "cpu_us",
        [("cpu_us", "CPU µs/call", "{:.2f}"), ("wall_us", "wall µs/call", "{:.2f}")],
        "floor",
        {"calls": 100_000},
        {"calls": 20_000},
        rounds=5,
        # The untimed wait first: the target reads the first case. The timed one is the path of
        # every wait under a psycogreen timeout and of every connect with connect_timeout.
        cases=[{}, {"timeout": 5.0}],
        quick_rounds=3,
    ),
    Section(
        "observe",
        "1b. What observing costs a wait: section 1's call with and without a subscriber",
        "The call of section 1 in one process, alternating in 40 blocks between no subscriber, "
        "a no-op subscriber of psycogreen's events, and a no-op subscriber of per-wait timing "
        "(which installs the callback's timing twin): CPU µs per call in each mode, and the "
        "ratios to no subscriber measured in the same process.",
        ["gevent", "eventlet"],
        "sub_ratio",
        [
            ("plain_us", "no subscriber µs/call", "{:.2f}"),
            ("sub_us", "no-op subscriber µs/call", "{:.2f}"),
            ("timed_us", "per-wait timing µs/call", "{:.2f}"),
            ("sub_ratio", "subscriber / none", "{:.3f}"),
            ("timed_ratio", "timing / none", "{:.2f}"),
        ],
        None,
        {"calls": 200_000},
        {"calls": 40_000},
        rounds=5,
        quick_rounds=2,
    ),
    Section(
        "latency",
        "2. Per-query latency and client CPU, one client",
        "`SELECT 1` in a loop on one connection. Wall latency on a shared 2-core VM is dominated "
        "by how fast an idle vCPU wakes up: reported, not to be read as a ranking. Client CPU "
        "per query is the comparable figure.",
        ["blocking", "core", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop", "pgbench"],
        "cpu_us",
        [("wall_us", "wall µs/query", "{:.1f}"), ("cpu_us", "client CPU µs/query", "{:.1f}")],
        "blocking",
        {"queries": 50_000},
        {"queries": 5_000},
    ),
    Section(
        "throughput",
        "3. Throughput, `SELECT 1` for a fixed time",
        "Queries per second of the whole client process for C concurrent clients (threads for "
        "psycopg2 blocking and core, greenlets or tasks otherwise), and client CPU per query. "
        "Saturated figures swing ±15% between runs even interleaved.",
        ["threads", "core", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop", "pgbench"],
        "qps",
        [("qps", "queries/s", "{:,.0f}"), ("cpu_us", "client CPU µs/query", "{:.1f}")],
        "threads",
        {"duration": 2.0},
        {"duration": 1.0},
        cases=[{"clients": c} for c in (1, 8, 32, 64)],
        quick_cases=[{"clients": c} for c in (1, 32)],
    ),
    Section(
        "concurrency",
        "4. Concurrency: C clients × 20 × `pg_sleep(0.05)`",
        "Wall time of the whole batch over the ideal 1.0 s (connections opened beforehand).",
        ["threads", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop"],
        "ratio",
        [("ratio", "wall / ideal", "{:.3f}"), ("cpu_ms", "client CPU ms", "{:.0f}")],
        "threads",
        {"each": 20, "sleep": 0.05},
        {"each": 20, "sleep": 0.05},
        cases=[{"clients": c} for c in (1, 10, 100, 500)],
        quick_cases=[{"clients": c} for c in (10, 500)],
    ),
    Section(
        "large",
        "5. Large results: 3 columns (int, float8, text)",
        "`fetchall()` of the whole result, and a named (server-side) cursor iterated with "
        "`itersize` 2000 (asyncpg: `cursor(prefetch=2000)` in a transaction).",
        ["blocking", "core", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop"],
        "wall_s",
        [("wall_s", "wall s", "{:.3f}"), ("cpu_s", "client CPU s", "{:.3f}")],
        "blocking",
        {"rows": 1_000_000},
        {"rows": 100_000},
        cases=[{"mode": "fetchall"}, {"mode": "named"}],
    ),
    Section(
        "fairness",
        "6. Fairness: a 10 ms heartbeat during 100 concurrent long queries",
        "100 clients each run `pg_sleep(0.1)` 20 times (they wake in bursts) while a heartbeat "
        "sleeps 10 ms in a loop; the gaps between its ticks, in ms (ideal: 10).",
        ["threads", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop"],
        "max_gap_ms",
        [("max_gap_ms", "max gap ms", "{:.1f}"), ("p99_gap_ms", "p99 gap ms", "{:.1f}")],
        None,
        {"clients": 100, "each": 20, "sleep": 0.1},
        {"clients": 100, "each": 5, "sleep": 0.1},
    ),
    Section(
        "connect",
        "7. Connect: connect + close, one after the other",
        "Per connection (pgbench: `-C`, a new connection per `SELECT 1` transaction).",
        ["blocking", "core", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop", "pgbench"],
        "wall_ms",
        [("wall_ms", "wall ms/connect", "{:.2f}"), ("cpu_ms", "client CPU ms/connect", "{:.2f}")],
        "blocking",
        {"count": 1000},
        {"count": 100},
    ),
    Section(
        "rss",
        "8a. Memory: RSS with 500 connections each waiting in a query",
        "Process RSS while 500 connections each wait in `pg_sleep(2)`; per connection: "
        "(RSS - RSS before connecting) / 500.",
        ["threads", *GREEN_PAIR, "psycopg3-gevent", "asyncpg-uvloop"],
        "rss_mb",
        [("rss_mb", "RSS MB", "{:.1f}"), ("per_conn_kb", "KB/connection", "{:.0f}")],
        "threads",
        {"clients": 500, "sleep": 2.0},
        {"clients": 500, "sleep": 2.0},
    ),
    Section(
        "leak",
        "8b. Memory: RSS growth over many queries (leaks)",
        "8 clients run `SELECT 1`; RSS after a warm-up of a tenth of the queries, then growth "
        "to the end (after `gc.collect()`).",
        ["core", "gevent", "eventlet"],
        "growth_mb",
        [
            ("growth_mb", "growth MB", "{:+.2f}"),
            ("start_mb", "RSS after warm-up MB", "{:.1f}"),
            ("cpu_us", "client CPU µs/query", "{:.1f}"),
        ],
        None,
        {"queries": 1_000_000, "clients": 8},
        {"queries": 50_000, "clients": 8},
        rounds=1,
        quick_rounds=1,
    ),
]


# -- running -----------------------------------------------------------------------------------


def run_one(section: str, variant: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.join(HERE, "variants.py"), section, variant, json.dumps(params)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {out.returncode}: {tail[0][:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_section(
    sec: Section, dsn: str, quick: bool, rounds: int | None, log: Any
) -> dict[str, Any]:
    base = {**(sec.quick if quick else sec.full), "dsn": dsn}
    cases = (sec.quick_cases or sec.cases) if quick else sec.cases
    n_rounds = rounds or (sec.quick_rounds if quick else sec.rounds)
    results: dict[str, Any] = {
        "params": {k: v for k, v in base.items() if k != "dsn"},
        "rounds": n_rounds,
        "cases": [],
    }
    for case in cases:
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in sec.variants}
        for r in range(n_rounds):
            order = sec.variants[r % len(sec.variants) :] + sec.variants[: r % len(sec.variants)]
            for variant in order:
                started = time.monotonic()
                res = run_one(sec.key, variant, {**base, **case}, timeout=900)
                runs[variant].append(res)
                shown = res.get("error") or ", ".join(
                    f"{k}={v:.4g}"
                    for k, v in res.items()
                    if isinstance(v, float) and k != "max_rss_mb"
                )
                print(
                    f"  [{sec.key} {case or ''} round {r + 1}/{n_rounds}] {variant}: {shown} "
                    f"({time.monotonic() - started:.1f} s)",
                    file=log,
                    flush=True,
                )
        results["cases"].append({"case": case, "runs": runs})
    return results


# -- reporting ---------------------------------------------------------------------------------


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def _ratios(
    runs: dict[str, list[dict[str, Any]]], variant: str, base: str, key: str
) -> list[float]:
    out = []
    for mine, theirs in zip(runs.get(variant, []), runs.get(base, []), strict=False):
        if key in mine and key in theirs and theirs[key]:
            out.append(mine[key] / theirs[key])
    return out


def summary(sec: Section, case_result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per variant: median of the metric, and the ratios to the baseline and to 1.0.2."""
    runs = case_result["runs"]
    out: dict[str, dict[str, Any]] = {}
    for variant in sec.variants:
        values = [r[sec.metric] for r in runs[variant] if sec.metric in r]
        item: dict[str, Any] = {"median": statistics.median(values) if values else None}
        if sec.baseline:
            item["vs_base"] = _ratios(runs, variant, sec.baseline, sec.metric)
        if variant in LEGACY:
            item["vs_legacy"] = _ratios(runs, variant, LEGACY[variant], sec.metric)
        out[variant] = item
    return out


def table(sec: Section, case_result: dict[str, Any]) -> list[str]:
    runs = case_result["runs"]
    sums = summary(sec, case_result)
    headers = ["variant"] + [h for _, h, _ in sec.columns]
    if sec.baseline:
        headers.append(f"ratio to {sec.baseline}")
    headers.append("ratio to 1.0.2")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for variant in sec.variants:
        errors = [r["error"] for r in runs[variant] if "error" in r]
        cells = [LABELS.get(variant, variant)]
        for key, _, fmt in sec.columns:
            cells.append(_spread([r[key] for r in runs[variant] if key in r], fmt))
        if sec.baseline:
            cells.append(
                "1" if variant == sec.baseline else _spread(sums[variant]["vs_base"], "{:.2f}")
            )
        cells.append(
            _spread(sums[variant].get("vs_legacy", []), "{:.2f}") if variant in LEGACY else ""
        )
        if errors:
            cells[0] += f" (failed {len(errors)}×: {errors[0]})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _case(sec: Section, results: dict[str, Any], **match: Any) -> dict[str, Any] | None:
    for case in results.get(sec.key, {}).get("cases", []):
        if all(case["case"].get(k) == v for k, v in match.items()):
            return case  # type: ignore[no-any-return]
    return None


def targets(results: dict[str, Any]) -> list[str]:
    """The issue's targets, each as measured in this run."""
    by_key = {s.key: s for s in SECTIONS}
    rows: list[tuple[str, str, str, bool | None]] = []

    def ratio(section: str, variant: str, against: str, **match: Any) -> tuple[str, float | None]:
        sec = by_key[section]
        case = _case(sec, results, **match)
        if case is None:
            return "not run", None
        values = _ratios(case["runs"], variant, against, sec.metric)
        if not values:
            return "failed", None
        return _spread(values, "{:.2f}"), statistics.median(values)

    def metric(section: str, variant: str, key: str, **match: Any) -> list[float]:
        case = _case(by_key[section], results, **match)
        return [r[key] for r in case["runs"][variant] if key in r] if case else []

    for backend in ("gevent", "eventlet"):
        text, med = ratio("perwait", backend, LEGACY[backend])
        rows.append(
            (
                f"per-wait CPU, server-free, {backend}",
                "≤ 0.70× 1.0.2",
                text,
                None if med is None else med <= 0.70,
            )
        )
    for backend in ("gevent", "eventlet"):
        values = metric("observe", backend, "sub_ratio")
        med = statistics.median(values) if values else None
        rows.append(
            (
                f"per-wait CPU with a no-op events subscriber, {backend}, same process",
                "≤ 1.03× without",
                _spread(values, "{:.3f}") if values else "not run",
                None if med is None else med <= 1.03,
            )
        )
        values = metric("observe", backend, "timed_ratio")
        rows.append(
            (
                f"per-wait CPU with per-wait timing, {backend}, same process",
                "measured",
                _spread(values, "{:.2f}") if values else "not run",
                None,
            )
        )
    for backend in ("gevent", "eventlet"):
        text, med = ratio("perwait", f"{backend}-sub", backend, timeout=None)
        rows.append(
            (
                f"per-wait CPU with a no-op events subscriber, {backend}",
                "≤ 1.03× without",
                text,
                None if med is None else med <= 1.03,
            )
        )
        text, _ = ratio("perwait", f"{backend}-timed", backend, timeout=None)
        rows.append((f"per-wait CPU with per-wait timing, {backend}", "measured", text, None))
    for backend, bound in (("gevent", 1.0), ("eventlet", 0.95)):
        text, med = ratio("throughput", backend, "threads", clients=32)
        legacy, _ = ratio("throughput", LEGACY[backend], "threads", clients=32)
        rows.append(
            (
                f"throughput, 32 clients, {backend} / threads",
                f"≥ {bound:.2f}×",
                f"{text} (1.0.2: {legacy})",
                None if med is None else med >= bound,
            )
        )
    for backend in ("gevent", "eventlet"):
        values = metric("concurrency", backend, "ratio", clients=500)
        old = metric("concurrency", LEGACY[backend], "ratio", clients=500)
        med = statistics.median(values) if values else None
        rows.append(
            (
                f"500 × 20 × pg_sleep(0.05), {backend}, wall / ideal",
                "≤ 1.04",
                f"{_spread(values, '{:.3f}')} (1.0.2: {_spread(old, '{:.3f}')})",
                None if med is None else med <= 1.04,
            )
        )
    for backend in ("gevent", "eventlet"):
        text, med = ratio("large", backend, "blocking", mode="fetchall")
        legacy, _ = ratio("large", LEGACY[backend], "blocking", mode="fetchall")
        rows.append(
            (
                f"fetchall, {backend} / blocking",
                "≤ 1.05×",
                f"{text} (1.0.2: {legacy})",
                None if med is None else med <= 1.05,
            )
        )
    for backend in ("gevent", "eventlet"):
        values = metric("fairness", backend, "max_gap_ms")
        old = metric("fairness", LEGACY[backend], "max_gap_ms")
        med = statistics.median(values) if values else None
        rows.append(
            (
                f"heartbeat max gap, 100 long queries, {backend}",
                "≤ 15 ms",
                f"{_spread(values, '{:.1f}')} ms (1.0.2: {_spread(old, '{:.1f}')} ms)",
                None if med is None else med <= 15,
            )
        )
    for backend in ("gevent", "eventlet"):
        text, med = ratio("rss", backend, LEGACY[backend])
        rows.append(
            (
                f"RSS, 500 connections waiting, {backend}",
                "≤ 1.05× 1.0.2",
                text,
                None if med is None else med <= 1.05,
            )
        )
    for variant in ("gevent", "eventlet", "core"):
        values = metric("leak", variant, "growth_mb")
        med = statistics.median(values) if values else None
        rows.append(
            (
                f"RSS growth over the leak run, {variant}",
                "< 5 MB",
                f"{_spread(values, '{:+.2f}')} MB",
                None if med is None else med < 5,
            )
        )
    lines = ["| target | bound | measured (median [min–max]) | met |", "|---|---|---|---|"]
    for name, limit, text, met in rows:
        mark = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {limit} | {text} | {mark} |")
    return lines


def machine(dsn: str) -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cores"] = str(os.cpu_count())
    try:
        mem = Path("/proc/meminfo").read_text().split()[1]
        info["memory"] = f"{int(mem) / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    for dist in (
        "psycopg2-binary",
        "psycopg2",
        "gevent",
        "greenlet",
        "eventlet",
        "psycopg",
        "asyncpg",
        "uvloop",
        "psycogreen-core",
        "psycogreen-gevent",
        "psycogreen-eventlet",
    ):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import psycopg2

        conn = psycopg2.connect(dsn)
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        info["PostgreSQL"] = cur.fetchone()[0]
        conn.close()
    except Exception as exc:
        info["PostgreSQL"] = f"? ({exc})"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def report(results: dict[str, Any], info: dict[str, str], quick: bool, elapsed: float) -> str:
    lines = [
        (
            f"Run of {results['started']} UTC, {'quick (smoke) run' if quick else 'full run'}, "
            f"{elapsed / 60:.1f} min. Each figure: median over interleaved rounds "
            "[min–max]; ratios are taken per round against the baseline measured in the same "
            "round, then summarised the same way."
        ),
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "### Targets",
        "",
        *targets(results),
    ]
    for sec in SECTIONS:
        if sec.key not in results:
            continue
        res = results[sec.key]
        lines += [
            "",
            f"### {sec.title}",
            "",
            sec.text,
            "",
            f"Parameters: {json.dumps(res['params'])}; {res['rounds']} round(s).",
            "",
        ]
        for case in res["cases"]:
            if case["case"]:
                lines += [f"**{', '.join(f'{k} = {v}' for k, v in case['case'].items())}**", ""]
            lines += [*table(sec, case), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument(
        "--sections",
        nargs="*",
        default=[s.key for s in SECTIONS],
        choices=[s.key for s in SECTIONS],
    )
    parser.add_argument("--rounds", type=int, help="override every section's number of rounds")
    parser.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_BENCH_DSN"))
    parser.add_argument("--docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--report-from", help="only render the report of a saved results JSON")
    args = parser.parse_args()

    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        text = report(saved["results"], saved["machine"], saved["quick"], saved["elapsed"])
        print(text)
        if args.docs:
            write_docs(text)
        return

    import legacy

    legacy.ensure()
    server = None
    dsn = args.dsn
    if not dsn:
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres(max_connections=1100)
        dsn = server.start()
        print(f"throwaway PostgreSQL at {dsn}", file=sys.stderr)
    try:
        info = machine(dsn)
        started = time.monotonic()
        results: dict[str, Any] = {
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        }
        for sec in SECTIONS:
            if sec.key in args.sections:
                print(f"{sec.title}", file=sys.stderr, flush=True)
                results[sec.key] = run_section(sec, dsn, args.quick, args.rounds, sys.stderr)
        elapsed = time.monotonic() - started
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        if server is not None:
            server.stop()
    text = report(results, info, args.quick, elapsed)
    print(text)
    out_dir = Path(HERE) / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = results["started"].replace(" ", "T").replace(":", "")
    (out_dir / f"{stamp}.json").write_text(
        json.dumps(
            {"results": results, "machine": info, "quick": args.quick, "elapsed": elapsed}, indent=1
        )
    )
    (out_dir / f"{stamp}.md").write_text(text)
    if args.docs:
        write_docs(text)


DOCS_HEAD = """# Benchmarks

Run them with one command from a fresh clone (it starts its own throwaway PostgreSQL, fetches
psycogreen 1.0.2 once into `bench/.cache` and loads it under another name):

    hatch run bench:run            # the full suite, 20-30 minutes
    hatch run bench:run --quick    # a smoke run of a few minutes
    hatch run bench:run --sections perwait throughput --rounds 5

Every variant runs in a process of its own; rounds are interleaved (round r runs every variant
once, in an order rotated by r); figures are medians with the min–max spread, and every
comparison is a ratio against a baseline measured in the same run. Nothing here is an absolute
bound, and CI does not run the suite.

"""


def write_docs(text: str) -> None:
    path = Path(ROOT) / "docs" / "benchmarks.md"
    notes = Path(HERE) / "NOTES.md"
    extra = notes.read_text() if notes.exists() else ""
    path.write_text(DOCS_HEAD + extra + "\n## Latest report\n\n" + text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
