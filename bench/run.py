# SPDX-License-Identifier: BSD-3-Clause
# The report prints multiplication signs, en dashes and µs; sys.path takes plain strings.
# ruff: noqa: RUF001, RUF002, PTH100, PTH118, PTH120
"""The benchmark suite: ``hatch run bench:run [--quick] [--sections ...] [--docs]``.

Every measurement runs in a process of its own (``bench/variants.py``), one variant at a time.
Rounds are interleaved: round r runs every variant once, in an order rotated by r, so that
load from elsewhere on the machine falls on all variants alike. Each figure is reported as the
median over rounds with the min–max spread, and as ratios to baselines measured in the same
rounds (each round's ratio, then their median and spread). No figure is an absolute bound.

Sections 9 and 10 run the measuring processes of ``bench/interrupt.py`` and ``bench/copying.py``
(``bench/standalone.py``).

The server: ``--dsn``, else ``PSYCOGREEN_BENCH_DSN``, else a throwaway PostgreSQL started for
the run (``tests/support/postgres.py``, needs the PostgreSQL server binaries). The report is
printed and saved under ``bench/results/`` with its results document (JSON: each section's
summary and rounds). With ``--docs`` the run's sections replace theirs in
``docs/benchmarks.json``, and ``docs/benchmarks.md`` and its charts (``bench/charts.py``, in
``docs/img/bench/``) are written from that file; ``--charts`` (``hatch run bench:charts``)
writes them again from it.
"""

from __future__ import annotations

import os.path
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.append(HERE)  # imported from the tests too: the sibling modules
sys.path.append(ROOT)  # tests.support: the throwaway server, the child-process runner

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import charts  # noqa: E402 (bench/charts.py)
import standalone  # noqa: E402 (bench/standalone.py)

from tests.support.child import ChildFailedError, run_json  # noqa: E402

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


BY_KEY = {s.key: s for s in SECTIONS}
#: Every section, in the report's order: bench/variants.py's, then the standalone benchmarks'.
ALL_KEYS = [s.key for s in SECTIONS] + [s.key for s in standalone.SECTIONS]
TITLES = {s.key: s.title for s in [*SECTIONS, *standalone.SECTIONS]}


# -- running -----------------------------------------------------------------------------------


def run_one(section: str, variant: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    args = [os.path.join(HERE, "variants.py"), section, variant, json.dumps(params)]
    try:
        out = run_json(args, env={"PYTHONWARNINGS": "ignore"}, timeout=timeout)
    except ChildFailedError as exc:
        return {"error": exc.reason[:200]}
    return dict(out)


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


# -- summaries ---------------------------------------------------------------------------------
#
# The report, its targets and its charts are made from a summary of each section: per case and
# variant, the median, min, max and count of every column over the rounds, and the same of the
# per-round ratios to the baseline and to 1.0.2. The summary is what docs/benchmarks.json keeps
# (with the rounds themselves when the run kept them), so that the page and its charts can be
# made again from it (`--charts`), and a section run again alone replaces only its own part.


def _stat(values: list[float]) -> dict[str, Any]:
    return standalone.stat(values)


def _spread(value: dict[str, Any] | None, fmt: str) -> str:
    """``median [min–max]`` of a summarised figure; the median alone for one round."""
    if not value or value.get("n", 0) == 0:
        return "–"
    if value["n"] == 1:
        return fmt.format(value["median"])
    low, high = fmt.format(value["min"]), fmt.format(value["max"])
    return f"{fmt.format(value['median'])} [{low}–{high}]"


def _ratios(
    runs: dict[str, list[dict[str, Any]]], variant: str, base: str, key: str
) -> list[float]:
    out = []
    for mine, theirs in zip(runs.get(variant, []), runs.get(base, []), strict=False):
        if key in mine and key in theirs and theirs[key]:
            out.append(mine[key] / theirs[key])
    return out


def summarise_case(sec: Section, case_result: dict[str, Any]) -> dict[str, Any]:
    """One case's rounds, per variant: every column, the ratios, the errors."""
    runs = case_result["runs"]
    variants: dict[str, Any] = {}
    for variant in sec.variants:
        rounds = runs.get(variant, [])
        errors = [r["error"] for r in rounds if "error" in r]
        item: dict[str, Any] = {
            "columns": {
                key: _stat([r[key] for r in rounds if key in r]) for key, _, _ in sec.columns
            },
            "vs_base": _stat(_ratios(runs, variant, sec.baseline, sec.metric))
            if sec.baseline
            else None,
            "vs_legacy": _stat(_ratios(runs, variant, LEGACY[variant], sec.metric))
            if variant in LEGACY
            else None,
            "failed": len(errors),
            "first_error": errors[0] if errors else None,
        }
        variants[variant] = item
    return {"case": case_result["case"], "variants": variants}


def summarise(key: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A section's summary from its raw results (as run_section or standalone return them)."""
    if key in standalone.SUMMARISERS:
        return standalone.SUMMARISERS[key](raw["raw"], raw["params"])
    sec = BY_KEY[key]
    return {
        "params": raw["params"],
        "rounds": raw["rounds"],
        "cases": [summarise_case(sec, case) for case in raw["cases"]],
    }


# -- the report ----------------------------------------------------------------------------------


def table(sec: Section, case: dict[str, Any]) -> list[str]:
    headers = ["variant"] + [h for _, h, _ in sec.columns]
    if sec.baseline:
        headers.append(f"ratio to {sec.baseline}")
    headers.append("ratio to 1.0.2")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for variant in sec.variants:
        item = case["variants"].get(variant)
        if item is None:
            continue
        cells = [LABELS.get(variant, variant)]
        for key, _, fmt in sec.columns:
            cells.append(_spread(item["columns"].get(key), fmt))
        if sec.baseline:
            cells.append("1" if variant == sec.baseline else _spread(item["vs_base"], "{:.2f}"))
        cells.append(_spread(item["vs_legacy"], "{:.2f}") if variant in LEGACY else "")
        if item.get("failed"):
            cells[0] += f" (failed {item['failed']}×: {item['first_error']})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _case(sections: dict[str, Any], key: str, **match: Any) -> dict[str, Any] | None:
    for case in sections.get(key, {}).get("cases", []):
        if all(case["case"].get(k) == v for k, v in match.items()):
            return case  # type: ignore[no-any-return]
    return None


def targets(sections: dict[str, Any]) -> list[str]:
    """The issue's targets, each as measured in this run."""
    rows: list[tuple[str, str, str, bool | None]] = []

    def item(section: str, variant: str, **match: Any) -> dict[str, Any] | None:
        case = _case(sections, section, **match)
        return None if case is None else case["variants"].get(variant)

    def ratio(section: str, variant: str, against: str, **match: Any) -> tuple[str, float | None]:
        found = item(section, variant, **match)
        if found is None:
            return "not run", None
        value = found["vs_legacy"] if against == LEGACY.get(variant) else found["vs_base"]
        if not value or not value.get("n"):
            return "failed", None
        return _spread(value, "{:.2f}"), value["median"]

    def metric(section: str, variant: str, key: str, **match: Any) -> dict[str, Any]:
        found = item(section, variant, **match)
        return found["columns"].get(key, {"n": 0}) if found else {"n": 0}

    def median(value: dict[str, Any]) -> float | None:
        return value["median"] if value.get("n") else None

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
        med = median(values)
        rows.append(
            (
                f"per-wait CPU with a no-op events subscriber, {backend}, same process",
                "≤ 1.03× without",
                _spread(values, "{:.3f}") if med is not None else "not run",
                None if med is None else med <= 1.03,
            )
        )
        values = metric("observe", backend, "timed_ratio")
        rows.append(
            (
                f"per-wait CPU with per-wait timing, {backend}, same process",
                "measured",
                _spread(values, "{:.2f}") if median(values) is not None else "not run",
                None,
            )
        )

    def versus(section: str, variant: str, other: str, **match: Any) -> tuple[str, float | None]:
        """``variant``'s median over ``other``'s (each from its own processes), with both."""
        key = BY_KEY[section].metric
        mine, theirs = (
            median(metric(section, variant, key, **match)),
            median(metric(section, other, key, **match)),
        )
        if mine is None or theirs is None or not theirs:
            return "not run", None
        return f"{mine / theirs:.2f} ({mine:.2f} / {theirs:.2f} µs)", mine / theirs

    for backend in ("gevent", "eventlet"):
        text, med = versus("perwait", f"{backend}-sub", backend, timeout=None)
        rows.append(
            (
                f"per-wait CPU with a no-op events subscriber, {backend}, separate processes",
                "≤ 1.03× without",
                text,
                None if med is None else med <= 1.03,
            )
        )
        text, _ = versus("perwait", f"{backend}-timed", backend, timeout=None)
        rows.append(
            (
                f"per-wait CPU with per-wait timing, {backend}, separate processes",
                "measured",
                text,
                None,
            )
        )
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
        med = median(values)
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
        med = median(values)
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
        med = median(values)
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
        info["libpq"] = str(psycopg2.extensions.libpq_version())
    except Exception as exc:
        info["PostgreSQL"] = f"? ({exc})"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _run_line(run: dict[str, Any]) -> str:
    kind = "quick (smoke) run" if run["quick"] else "full run"
    return f"{run['started']} UTC, {kind}, {run['elapsed'] / 60:.1f} min"


def _chart_lines(key: str) -> list[str]:
    return [f"![{name.removesuffix('.svg')}](img/bench/{name})" for name in charts.charts_of(key)]


def ordered_keys(sections: dict[str, Any]) -> list[str]:
    return [key for key in ALL_KEYS if key in sections]


def report(doc: dict[str, Any]) -> str:
    """The report, from a results document (see `document`): text, tables, chart images."""
    sections = doc["sections"]
    used = list(dict.fromkeys(sections[key]["run"] for key in ordered_keys(sections)))
    runs = [doc["runs"][run] for run in used]
    how = (
        "Each figure: median over interleaved rounds [min–max]; ratios are taken per round "
        "against the baseline measured in the same round, then summarised the same way."
    )
    if len(runs) == 1:
        lines = [f"Run of {_run_line(runs[0])}. {how}", ""]
        lines += ["| machine | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in runs[0]["machine"].items()]
    else:
        lines = []
        for number, run in enumerate(runs, 1):
            titles = [
                TITLES[key].split(".")[0]
                for key in ordered_keys(sections)
                if sections[key]["run"] == used[number - 1]
            ]
            note = f" ({run['note']})" if run.get("note") else ""
            lines.append(
                f"- run {number}, of {_run_line(run)}{note}: sections {', '.join(titles)}."
            )
        lines += ["", how, ""]
        keys = list(dict.fromkeys(k for run in runs for k in run["machine"]))
        lines += ["| machine | " + " | ".join(f"run {i}" for i in range(1, len(runs) + 1)) + " |"]
        lines += ["|---|" + "---|" * len(runs)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(run["machine"].get(k, "") for run in runs) + " |")
    lines += ["", "### Targets", "", *targets(sections)]
    for key in ordered_keys(sections):
        res = sections[key]
        if key in standalone.TABLES:
            part = standalone.INTERRUPT if key == "interrupt" else standalone.COPY
            lines += ["", f"### {part.title}", "", part.text, ""]
            lines += [f"Parameters: {json.dumps(res['params'])}.", ""]
            if images := _chart_lines(key):
                lines += [*images, ""]
            lines += [*standalone.TABLES[key](res), ""]
            continue
        sec = BY_KEY[key]
        lines += [
            "",
            f"### {sec.title}",
            "",
            sec.text,
            "",
            f"Parameters: {json.dumps(res['params'])}; {res['rounds']} round(s).",
            "",
        ]
        if images := _chart_lines(key):
            lines += [*images, ""]
        for case in res["cases"]:
            if case["case"]:
                lines += [f"**{', '.join(f'{k} = {v}' for k, v in case['case'].items())}**", ""]
            lines += [*table(sec, case), ""]
    return "\n".join(lines) + "\n"


# -- the results document ------------------------------------------------------------------------
#
# {"format": 1,
#  "runs": {run id: {"started", "quick", "elapsed", "machine", "note"?}},
#  "sections": {key: {"run": run id, <summary>, "raw": <the rounds>?}}}


def document(
    raw: dict[str, Any], info: dict[str, str], quick: bool, elapsed: float
) -> dict[str, Any]:
    """A results document for one run: every section's summary, and its rounds."""
    run_id = raw["started"]
    sections = {}
    for key in ALL_KEYS:
        if key in raw:
            sections[key] = {"run": run_id, **summarise(key, raw[key]), "raw": raw[key]}
    run = {"started": raw["started"], "quick": quick, "elapsed": elapsed, "machine": info}
    return {"format": 1, "runs": {run_id: run}, "sections": sections}


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the sections of ``new`` replaced by new's, and only the runs still used.

    A run of ``new`` whose id (the minute it started) names a run that ``old`` keeps sections
    of gets another id: two runs started in the same minute stay two runs.
    """
    if old is None:
        return new
    kept = {s["run"] for key, s in old["sections"].items() if key not in new["sections"]}
    renamed = {}
    for run_id in new["runs"]:
        fresh, number = run_id, 2
        while fresh in kept:
            fresh, number = f"{run_id} ({number})", number + 1
        renamed[run_id] = fresh
    sections = {
        **old["sections"],
        **{key: {**s, "run": renamed[s["run"]]} for key, s in new["sections"].items()},
    }
    runs = {**old["runs"], **{renamed[k]: v for k, v in new["runs"].items()}}
    used = {section["run"] for section in sections.values()}
    return {
        "format": 1,
        "runs": {k: v for k, v in runs.items() if k in used},
        "sections": {k: sections[k] for k in ordered_keys(sections)},
    }


def from_saved(saved: dict[str, Any]) -> dict[str, Any]:
    """A results document from a file under bench/results/ (the older files hold the rounds)."""
    if "sections" in saved:
        return saved
    return document(saved["results"], saved["machine"], saved["quick"], saved["elapsed"])


# -- a report's tables, read back ------------------------------------------------------------------
#
# For a report whose rounds were not kept: its tables hold each figure's median, min and max,
# which is what the summary keeps, so that the document, the page and the charts can be made
# from them. report(import_report(text)) gives the text back.

_SPREAD = re.compile(
    r"^(?P<med>[+\-]?[\d,.]+)(?: \[(?P<lo>[+\-]?[\d,.]+)–(?P<hi>[+\-]?[\d,.]+)\])?$"
)
_HEADER = re.compile(
    r"^Run of (?P<started>.+?) UTC, (?P<kind>full run|quick \(smoke\) run), "
    r"(?P<minutes>[\d.]+) min\."
)
_PARAMS = re.compile(r"^Parameters: (?P<params>\{.*\}); (?P<rounds>\d+) round\(s\)\.$")
_FAILED = re.compile(r"^(?P<label>.*) \(failed (?P<count>\d+)×: (?P<error>.*)\)$")


class ReportFormatError(ValueError):
    """A report's text is not in the form `report` writes."""


def _parse_spread(cell: str, rounds: int) -> dict[str, Any]:
    if cell == "–":
        return {"n": 0}
    match = _SPREAD.match(cell)
    if match is None:
        raise ReportFormatError(f"not a figure or 'median [min–max]': {cell!r}")

    def number(text: str) -> float:
        return float(text.replace(",", ""))

    med = number(match["med"])
    if match["lo"] is None:
        return {"median": med, "min": med, "max": med, "n": 1}
    return {"median": med, "min": number(match["lo"]), "max": number(match["hi"]), "n": rounds}


def _case_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_table(sec: Section, rows: list[str], rounds: int) -> dict[str, Any]:
    by_label = {LABELS.get(v, v): v for v in sec.variants}
    variants: dict[str, Any] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().removeprefix("|").removesuffix("|").split("|")]
        label, failed, error = cells[0], 0, None
        if match := _FAILED.match(label):
            label, failed, error = match["label"], int(match["count"]), match["error"]
        variant = by_label.get(label)
        if variant is None:
            raise ReportFormatError(f"{sec.key}: no variant is labelled {label!r}")
        figures = cells[1:]
        columns = {
            key: _parse_spread(figures[i], rounds) for i, (key, _, _) in enumerate(sec.columns)
        }
        rest = figures[len(sec.columns) :]
        vs_base = None
        if sec.baseline:
            base = rest.pop(0)
            one = {"median": 1.0, "min": 1.0, "max": 1.0, "n": rounds}
            vs_base = one if variant == sec.baseline else _parse_spread(base, rounds)
        vs_legacy = _parse_spread(rest[0], rounds) if variant in LEGACY else None
        variants[variant] = {
            "columns": columns,
            "vs_base": vs_base,
            "vs_legacy": vs_legacy,
            "failed": failed,
            "first_error": error,
        }
    return variants


def import_report(text: str, note: str) -> dict[str, Any]:
    """A results document from the text of a one-run report (`report`'s output)."""
    lines = text.splitlines()
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise ReportFormatError("the report does not start with 'Run of ... UTC, ..., N min.'")
    info: dict[str, str] = {}
    index = lines.index("| machine | |") + 2
    while index < len(lines) and lines[index].startswith("| "):
        key, value = (c.strip() for c in lines[index].strip("|").split("|", 1))
        info[key] = value
        index += 1
    by_title = {title: key for key, title in TITLES.items()}
    run_id = header["started"]
    sections: dict[str, Any] = {}
    key: str | None = None
    case: dict[str, Any] = {}
    rounds = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("### "):
            key = by_title.get(line.removeprefix("### "))
            if key is not None and key not in BY_KEY:
                raise ReportFormatError(f"section {key!r}: only bench/variants.py's are read back")
            case = {}
        elif key is None:
            continue
        elif match := _PARAMS.match(line):
            rounds = int(match["rounds"])
            params = json.loads(match["params"])
            sections[key] = {"run": run_id, "params": params, "rounds": rounds, "cases": []}
        elif line.startswith("**") and line.endswith("**"):
            case = {}
            for part in line.strip("*").split(", "):
                name, _, value = part.partition(" = ")
                case[name] = _case_value(value)
        elif line.startswith("| variant |"):
            rows = []
            index += 1  # the |---| line
            while index < len(lines) and lines[index].startswith("| "):
                rows.append(lines[index])
                index += 1
            variants = _parse_table(BY_KEY[key], rows, rounds)
            sections[key]["cases"].append({"case": case, "variants": variants})
    run = {
        "started": run_id,
        "quick": header["kind"] != "full run",
        "elapsed": float(header["minutes"]) * 60,
        "machine": info,
        "note": note,
    }
    return {"format": 1, "runs": {run_id: run}, "sections": sections}


# -- the command ---------------------------------------------------------------------------------

DOCS = Path(ROOT) / "docs"
PAGE = DOCS / "benchmarks.md"
DATA = DOCS / "benchmarks.json"
IMAGES = DOCS / "img" / "bench"


def load_data() -> dict[str, Any] | None:
    return json.loads(DATA.read_text(encoding="utf-8")) if DATA.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--sections", nargs="*", default=ALL_KEYS, choices=ALL_KEYS)
    parser.add_argument(
        "--rounds",
        type=int,
        help="override every section's number of rounds (the interrupt section's runs)",
    )
    parser.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_BENCH_DSN"))
    parser.add_argument(
        "--docs",
        action="store_true",
        help="put this run's sections into docs/benchmarks.json (replacing theirs), and write "
        "docs/benchmarks.md and its charts (docs/img/bench/) from it",
    )
    parser.add_argument(
        "--charts",
        action="store_true",
        help="only write docs/benchmarks.md and its charts again, from docs/benchmarks.json",
    )
    parser.add_argument(
        "--report-from",
        metavar="FILE",
        help="only render the report of a saved results file (bench/results/*.json)",
    )
    parser.add_argument(
        "--import-report",
        metavar="FILE",
        help="only make docs/benchmarks.json from the tables of a report (a page whose rounds "
        "were not kept), then write the page and its charts",
    )
    args = parser.parse_args()

    if args.charts:
        doc = load_data()
        if doc is None:
            parser.error(f"{DATA} does not exist: run `hatch run bench:run --docs` first")
        write_docs(doc)
        return
    if args.import_report:
        text = Path(args.import_report).read_text(encoding="utf-8")
        text = text.split("\n## Latest report\n\n", 1)[-1]
        text = text.removeprefix(f"{REPORT_OPEN}\n\n").removesuffix(f"\n{REPORT_CLOSE}\n")
        note = "read back from the tables of its report: its rounds were not kept"
        write_docs(import_report(text, note))
        return
    if args.report_from:
        doc = from_saved(json.loads(Path(args.report_from).read_text(encoding="utf-8")))
        print(report(doc))
        if args.docs:
            write_docs(merge(load_data(), doc))
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
        raw: dict[str, Any] = {
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        }
        for key in ALL_KEYS:
            if key not in args.sections:
                continue
            print(TITLES[key], file=sys.stderr, flush=True)
            if key in BY_KEY:
                raw[key] = run_section(BY_KEY[key], dsn, args.quick, args.rounds, sys.stderr)
                continue
            part = standalone.INTERRUPT if key == "interrupt" else standalone.COPY
            params = dict(part.quick if args.quick else part.full)
            if args.rounds:
                params["runs" if key == "interrupt" else "rounds"] = args.rounds
            raw[key] = {"params": params, "raw": standalone.RUNNERS[key](dsn, params, sys.stderr)}
        elapsed = time.monotonic() - started
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        if server is not None:
            server.stop()
    doc = document(raw, info, args.quick, elapsed)
    text = report(doc)
    print(text)
    out_dir = Path(HERE) / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = raw["started"].replace(" ", "T").replace(":", "")
    (out_dir / f"{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / f"{stamp}.md").write_text(text)
    if args.docs:
        write_docs(merge(load_data(), doc))


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

With `--docs` the run's sections replace theirs in `docs/benchmarks.json` (the figures of
every section, and their rounds), from which this page and its charts (`docs/img/bench/`) are
written; `hatch run bench:charts` writes them again from that file.

"""


REPORT_OPEN = '<div class="bench-report" markdown>'
REPORT_CLOSE = "</div>"


def write_docs(doc: dict[str, Any]) -> None:
    """docs/benchmarks.json, the page, and the charts, all from ``doc``."""
    DATA.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    IMAGES.mkdir(parents=True, exist_ok=True)
    svgs = charts.render(doc, LABELS)
    for old in IMAGES.glob("*.svg"):
        if old.name not in svgs:
            old.unlink()  # a chart of a section the document no longer has
    for name, svg in svgs.items():
        (IMAGES / name).write_text(svg, encoding="utf-8")
    notes = Path(HERE) / "NOTES.md"
    extra = notes.read_text(encoding="utf-8") if notes.exists() else ""
    # The wrapper keeps the report's table rows on one line (docs/stylesheets/benchmarks.css).
    body = f"{REPORT_OPEN}\n\n{report(doc)}\n{REPORT_CLOSE}\n"
    PAGE.write_text(DOCS_HEAD + extra + "\n## Latest report\n\n" + body, encoding="utf-8")
    print(f"wrote {DATA}, {PAGE} and {len(svgs)} charts in {IMAGES}", file=sys.stderr)


if __name__ == "__main__":
    main()
