# SPDX-License-Identifier: BSD-3-Clause
# The tables print arrows, multiplication signs and µs.
# ruff: noqa: RUF001
"""The interrupt and COPY benchmarks as sections of ``bench/run.py``'s report.

``bench/interrupt.py`` and ``bench/copying.py`` stay scripts of their own; here their measuring
processes are run the same way (their modules are loaded under other names, so that nothing of
theirs is monkey-patched here), and their results summarised and tabulated like the other
sections'.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Standalone:
    key: str
    title: str
    text: str
    full: dict[str, Any]
    quick: dict[str, Any]


INTERRUPT = Standalone(
    "interrupt",
    "9. Interrupting a query: until the server's backend is idle",
    "A greenlet runs `SELECT pg_sleep(5)` and is interrupted after 0.1 s; another connection "
    "polls `pg_stat_activity` until the backend is no longer active, and a 1 ms heartbeat "
    "records the hub's worst gap meanwhile (`bench/interrupt.py`; docs/interruptions.md). "
    "Black-holed: the server behind a frozen proxy, one run, cancel bound 0.5 s, the network "
    "back after 1 s.",
    {"runs": 20},
    {"runs": 5},
)
COPY = Standalone(
    "copy",
    "10. COPY: psycogreen's cooperative COPY against psycopg2's blocking COPY",
    "COPY TO (table → BytesIO) and COPY FROM (bytes → table) of `(int, md5 text, numeric)` "
    "rows: psycopg2's own `copy_expert` without a wait callback against psycogreen's in a "
    "patched process, alternated round by round, each on a connection of its own making "
    "(`bench/copying.py`; docs/copy.md). The ratio is the median of the per-round ratios; the "
    "worst gap is the longest a 10 ms heartbeat waited beyond its 10 ms during psycogreen's "
    "COPY, over all rounds.",
    {"rows": 1_000_000, "rounds": 5},
    {"rows": 100_000, "rounds": 2},
)
SECTIONS = [INTERRUPT, COPY]
SCHEDULERS = ("gevent", "eventlet")


def stat(values: list[float]) -> dict[str, Any]:
    """Median, min, max and count of ``values`` (``{"n": 0}`` when there are none)."""
    if not values:
        return {"n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _load(name: str) -> types.ModuleType:
    """``bench/<name>.py`` as a module named ``bench_<name>`` (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- interrupt -----------------------------------------------------------------------------------


def run_interrupt(dsn: str, params: dict[str, Any], log: Any) -> dict[str, Any]:
    """Per scheduler: per case, the lists of seconds ``settle``, ``raised`` and ``gap``."""
    bench = _load("interrupt")
    raw: dict[str, Any] = {}
    for sched in SCHEDULERS:
        print(f"  [interrupt] {sched}: {params['runs']} runs per case", file=log, flush=True)
        try:
            raw[sched] = bench._run_child(sched, dsn, params["runs"])
        except RuntimeError as exc:
            raw[sched] = {"error": str(exc).strip().splitlines()[-1][:200]}
    return raw


def summarise_interrupt(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    schedulers: dict[str, Any] = {}
    for sched, cases in raw.items():
        if "error" in cases:
            schedulers[sched] = {"error": cases["error"]}
            continue
        schedulers[sched] = {
            case: {key: stat(values) for key, values in seen.items()}
            for case, seen in cases.items()
        }
    return {"params": params, "rounds": params["runs"], "schedulers": schedulers}


CASE_NAMES = {
    "Timeout": "`{sched}.Timeout`",
    "kill": "kill",
    "psycogreen deadline": "`psycogreen.core.timeout()`",
    "psycogreen conn.cancel()": "`conn.cancel()` (guarded)",
    "psycopg2 conn.cancel()": "psycopg2's own `cancel()`",
    "black-holed: Timeout": "black-holed: `{sched}.Timeout`",
    "black-holed: psycogreen conn.cancel()": "black-holed: `conn.cancel()` (guarded)",
    "black-holed: psycopg2 conn.cancel()": "black-holed: psycopg2's own `cancel()`",
}


def _ms(value: dict[str, Any]) -> str:
    if not value or value.get("n", 0) == 0:
        return "-"
    if value["n"] == 1:
        return f"{value['median'] * 1000:.1f}"
    return f"{value['median'] * 1000:.1f} / {value['max'] * 1000:.1f}"


def table_interrupt(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"Milliseconds, median / max of {summary['rounds']} runs (black-holed: one run).",
        "",
        (
            "| scheduler | case | interrupt → backend idle (ms) | interrupt → exception (ms) "
            "| hub worst gap (ms) |"
        ),
        "|---|---|---|---|---|",
    ]
    for sched, cases in summary["schedulers"].items():
        if "error" in cases:
            lines.append(f"| {sched} | failed: {cases['error']} | | | |")
            continue
        for case, seen in cases.items():
            name = CASE_NAMES.get(case, case).format(sched=sched)
            lines.append(
                f"| {sched} | {name} | {_ms(seen['settle'])} | {_ms(seen['raised'])} "
                f"| {_ms(seen['gap'])} |"
            )
    return lines


# -- COPY ----------------------------------------------------------------------------------------

DIRECTIONS = (("COPY TO", "to"), ("COPY FROM", "from"))


def run_copy(dsn: str, params: dict[str, Any], log: Any) -> dict[str, Any]:
    """Per ``"<scheduler> <format>"``: the measuring process's rounds."""
    bench = _load("copying")
    print(f"  [copy] a table of {params['rows']:,} rows", file=log, flush=True)
    bench.setup(dsn, params["rows"])
    raw: dict[str, Any] = {}
    for fmt in bench.FORMATS:
        for sched in SCHEDULERS:
            print(f"  [copy] {sched} {fmt}: {params['rounds']} rounds", file=log, flush=True)
            try:
                raw[f"{sched} {fmt}"] = bench.run_child(sched, fmt, dsn, params["rounds"])
            except RuntimeError as exc:
                raw[f"{sched} {fmt}"] = {"error": str(exc).strip().splitlines()[-1][:200]}
    return raw


def summarise_copy(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    rows = []
    per_row = 1e6 / params["rows"]
    for name, result in raw.items():
        sched, fmt = name.split(" ", 1)
        for direction, key in DIRECTIONS:
            row: dict[str, Any] = {"format": fmt, "direction": direction, "scheduler": sched}
            if "error" in result:
                rows.append({**row, "error": result["error"]})
                continue
            blocking = [r[key] for r in result["blocking"]]
            green = [r[key] for r in result["green"]]
            row |= {
                "blocking_s": statistics.median(r["wall"] for r in blocking),
                "psycogreen_s": statistics.median(r["wall"] for r in green),
                # Per round, against the blocking COPY of the same round, moments apart.
                "ratio": stat(
                    [g["wall"] / b["wall"] for g, b in zip(green, blocking, strict=True)]
                ),
                "gap_ms": max(r["gap_ms"] for r in green),
                "cpu_row_blocking_us": statistics.median(r["cpu"] for r in blocking) * per_row,
                "cpu_row_green_us": statistics.median(r["cpu"] for r in green) * per_row,
            }
            rows.append(row)
    order = {
        (fmt, d, s): i
        for i, (fmt, d, s) in enumerate(
            (f, d, s) for f in ("text", "binary") for d, _ in DIRECTIONS for s in SCHEDULERS
        )
    }
    rows.sort(key=lambda r: order.get((r["format"], r["direction"], r["scheduler"]), 99))
    return {"params": params, "rounds": params["rounds"], "rows": rows}


def table_copy(summary: dict[str, Any]) -> list[str]:
    lines = [
        (
            "| format | direction | scheduler | psycopg2 blocking (s) | psycogreen (s) | ratio "
            "[min–max] | worst gap (ms) | CPU/row blocking (µs) | CPU/row psycogreen (µs) |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        head = f"| {row['format']} | {row['direction']} | {row['scheduler']} "
        if "error" in row:
            lines.append(head + f"| failed: {row['error']} | | | | | |")
            continue
        ratio = row["ratio"]
        lines.append(
            head + f"| {row['blocking_s']:.3f} | {row['psycogreen_s']:.3f} "
            f"| {ratio['median']:.2f}× [{ratio['min']:.2f}–{ratio['max']:.2f}] "
            f"| {row['gap_ms']:.0f} | {row['cpu_row_blocking_us']:.2f} "
            f"| {row['cpu_row_green_us']:.2f} |"
        )
    return lines


RUNNERS = {"interrupt": run_interrupt, "copy": run_copy}
SUMMARISERS = {"interrupt": summarise_interrupt, "copy": summarise_copy}
TABLES = {"interrupt": table_interrupt, "copy": table_copy}
