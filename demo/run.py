#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen's demo: many concurrent PostgreSQL clients, blocking, on threads, gevent and eventlet.

``scripts/demo`` (or ``hatch run demo:run``, or ``python demo/run.py`` with the packages
importable) starts a throwaway PostgreSQL of its own, runs the same workload once per mode,
each mode in its own process (``demo/child.py``: a process can be monkey-patched for one
scheduler only), prints a table, shows what happens to a query that is interrupted, and
removes the server.

The modes:

- ``blocking``: plain psycopg2, every client's work done by one thread, one after the other. It
  is what a gevent or eventlet program degenerates to when psycopg2 blocks: the baseline.
- ``threads``: plain psycopg2, one OS thread per client.
- ``gevent``: ``gevent.monkey.patch_all()`` and ``psycogreen.gevent.patch_psycopg()``, one
  greenlet per client.
- ``eventlet``: ``eventlet.monkey_patch()`` and ``psycogreen.eventlet.patch_psycopg()``, one
  greenthread per client.
- ``gevent-unpatched``: monkey-patched gevent and one greenlet per client, but psycopg2 without
  a wait callback: every query blocks the whole process.

A mode that fails (its process exits with an error, or runs past ``--mode-timeout``) is shown as
failed in the table, with the last lines of its output; the other modes and the interruption
showcase still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from progress import Counters, ProgressLine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD = HERE / "child.py"
sys.path.insert(1, str(ROOT))  # tests.support: the child-process runner, the throwaway server

from tests.support.child import ChildFailedError, run_json  # noqa: E402

#: mode -> label in the report, in the order the modes run.
MODES = {
    "blocking": "blocking psycopg2, 1 thread",
    "threads": "psycopg2, 1 thread/client",
    "gevent": "gevent + psycogreen",
    "eventlet": "eventlet + psycogreen",
    "gevent-unpatched": "gevent, psycopg2 unpatched",
}
HEARTBEAT_MS = 10
#: How many of a failed process's last output lines the report shows (whole lines).
TAIL_LINES = 15


@dataclass
class Failure:
    """A mode's process that did not produce a result: why, and the end of its output."""

    mode: str
    reason: str  # "exit status 1", "timed out after 300 s", ...
    tail: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "failed": self.reason, "output_tail": self.tail}


def child_command(args: argparse.Namespace, mode: str, dsn: str) -> list[str]:
    return [
        str(CHILD),
        "--mode",
        mode,
        "--dsn",
        dsn,
        "--clients",
        str(args.clients),
        "--queries",
        str(args.queries),
        "--sleep",
        str(args.sleep),
    ]


def last_lines(text: str, count: int = TAIL_LINES) -> list[str]:
    """The last ``count`` non-blank-trailing lines of ``text``, each whole."""
    lines = text.rstrip().splitlines()
    return lines[-count:]


def run_child(
    args: argparse.Namespace, mode: str, dsn: str, progress: ProgressLine | None
) -> dict[str, Any] | Failure:
    """Run ``mode`` in a fresh interpreter, showing its progress; its result, or why it failed."""
    with tempfile.TemporaryDirectory(prefix="psycogreen-demo-") as tmp:
        command = child_command(args, mode, dsn)
        counters = show = None
        if progress is not None:
            counters = Counters(Path(tmp) / "progress", create=True)
            command += ["--progress", str(Path(tmp) / "progress")]
            show = functools.partial(_show, progress, counters)
        try:
            result = run_json(
                command,
                env={"PYTHONUNBUFFERED": "1"},
                timeout=args.mode_timeout,
                while_running=show,
            )
        except ChildFailedError as exc:
            if exc.returncode is None:
                reason = f"timed out after {args.mode_timeout:g} s"
            elif exc.returncode != 0:
                reason = f"exit status {exc.returncode}"
            else:
                reason = "exit status 0 but no result"
            return Failure(mode, reason, last_lines(exc.stdout + exc.stderr))
        finally:
            if counters is not None:
                counters.close()
    return dict(result)


def _show(progress: ProgressLine, counters: Counters) -> None:
    progress.update(counters.read())


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def rate(result: dict[str, Any]) -> float:
    return float(result["queries"] / result["wall"]) if result["wall"] > 0 else 0.0


def print_failure(failure: Failure, label: str, indent: str = "  ") -> None:
    print(
        f"{indent}! {label} failed ({failure.reason}); the last {len(failure.tail)} lines of "
        "its output:"
    )
    for line in failure.tail:
        print(f"{indent}    {line}")


def report(args: argparse.Namespace, outcomes: list[dict[str, Any] | Failure]) -> None:
    results = [r for r in outcomes if not isinstance(r, Failure)]
    base = next((r for r in results if r["mode"] == "blocking"), None)
    header = (
        "mode",
        "connect all",
        "queries: wall",
        "queries/s",
        "vs blocking",
        "in flight",
        "worst tick gap",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        ratio = f"{base['wall'] / r['wall']:.1f}x" if base and r["wall"] > 0 else "-"
        rows.append(
            (
                MODES[r["mode"]],
                fmt_seconds(r["connect_wall"]),
                fmt_seconds(r["wall"]),
                f"{rate(r):,.0f}",
                ratio,
                str(r["peak_in_flight"]),
                fmt_seconds(r["heartbeat_worst"]),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(label) for label in MODES.values()))

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"  {first}  {rest}"

    print()
    print(line(header))
    print("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    by_mode = {r["mode"]: row for r, row in zip(results, rows, strict=True)}
    for outcome in outcomes:
        if isinstance(outcome, Failure):
            label = MODES[outcome.mode].ljust(widths[0])
            print(f"  {label}  FAILED ({outcome.reason}): the end of its output is below")
        else:
            print(line(by_mode[outcome["mode"]]))
    print()
    print(
        f"  connect all: opening the {args.clients} connections (one per client), each mode "
        "its own way."
    )
    print(
        f"  queries: every client's {args.queries} queries at once (1 in 4 is "
        f"pg_sleep({args.sleep:g})); queries/s and vs blocking are for this phase."
    )
    print("  in flight: most queries running at the same time.")
    print(
        f"  worst tick gap: longest time between two ticks of a {HEARTBEAT_MS} ms "
        "heartbeat on the same scheduler,"
    )
    print("  i.e. how long the scheduler was frozen ('-': blocking has no scheduler).")
    for r in results:
        if r["errors"]:
            print(f"  ! {MODES[r['mode']]}: {r['errors']} errors, first: {r['first_error']}")
    for outcome in outcomes:
        if isinstance(outcome, Failure):
            print()
            print_failure(outcome, MODES[outcome.mode])


def describe(outcome: dict[str, Any]) -> str:
    state = "closed" if outcome["connection_closed"] else "open"
    return f"{outcome['raised']} after {fmt_seconds(outcome['after'])}, connection {state}"


def report_interrupts(
    gevent_run: dict[str, Any] | Failure, bundled: dict[str, Any] | Failure
) -> None:
    print()
    print("Interrupting SELECT pg_sleep(5) after 0.5 s, then asking the server about its backend:")
    if isinstance(gevent_run, Failure):
        print_failure(gevent_run, "the gevent part")
    else:
        outcome = gevent_run["scheduler_timeout"]
        print(f"  gevent.Timeout, psycogreen.gevent:      {describe(outcome)}")
        print(f"      server backend 200 ms later:         {outcome['backend_after_200ms']}")
        outcome = gevent_run["psycogreen_timeout"]
        print(f"  psycogreen.core.timeout(0.5):           {describe(outcome)}")
        kept = "the same backend" if outcome["same_backend_after_rollback"] else "a new backend"
        print(f"      after rollback(), the next query ran on {kept} (pid {outcome['pid']})")
    if isinstance(bundled, Failure):
        print_failure(bundled, "the eventlet part")
    else:
        outcome = bundled["scheduler_timeout"]
        print(f"  eventlet.Timeout, eventlet's callback:  {describe(outcome)}")
        print(f"      server backend 200 ms later:         {outcome['backend_after_200ms']}")
        print("      (a callback that only gives up waiting, like psycogreen 1.x, leaves the")
        print("      query running on the server, holding its locks, until it ends)")


def server_version(dsn: str) -> str:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def missing_modules(modes: list[str], interrupt: bool) -> list[str]:
    """The modules the chosen modes import that cannot be found."""
    import importlib.util

    needed = {"psycopg2"}
    if interrupt or any(m.startswith("gevent") for m in modes):
        needed |= {"gevent", "psycogreen.gevent"}
    if interrupt or "eventlet" in modes:
        needed |= {"eventlet", "psycogreen.eventlet"}
    missing = []
    for name in sorted(needed):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(name)
    return missing


def run_modes(
    args: argparse.Namespace, modes: list[str], dsn: str
) -> list[dict[str, Any] | Failure]:
    outcomes: list[dict[str, Any] | Failure] = []
    progress = ProgressLine()
    for mode in modes:
        progress.begin(MODES[mode], args.clients, args.queries)
        outcome = run_child(args, mode, dsn, progress)
        if isinstance(outcome, Failure):
            progress.end(f"FAILED ({outcome.reason})")
        else:
            progress.end(
                f"{outcome['queries']} queries in {fmt_seconds(outcome['wall'])} "
                f"({rate(outcome):,.0f}/s)"
            )
        outcomes.append(outcome)
    return outcomes


def document(
    args: argparse.Namespace,
    outcomes: list[dict[str, Any] | Failure],
    interrupts: dict[str, dict[str, Any] | Failure],
) -> dict[str, Any]:
    def plain(item: dict[str, Any] | Failure) -> dict[str, Any]:
        return item.as_json() if isinstance(item, Failure) else item

    return {
        "settings": vars(args),
        "results": [r for r in outcomes if not isinstance(r, Failure)],
        "failures": [r.as_json() for r in outcomes if isinstance(r, Failure)],
        "interrupts": {key: plain(value) for key, value in interrupts.items()},
    }


def parent(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
        return 2
    if missing := missing_modules(modes, args.interrupt):
        print(
            f"cannot import {', '.join(missing)}: run the demo with `scripts/demo` (or "
            "`hatch run demo:run`), or install psycopg2-binary and packages/core, "
            "packages/gevent and packages/eventlet (pip install -e) first"
        )
        return 2
    started = time.monotonic()
    server = None
    dsn = args.dsn
    if dsn is None:
        from tests.support.postgres import ThrowawayPostgres

        print("Starting a throwaway PostgreSQL ...", end="", flush=True)
        server = ThrowawayPostgres(max_connections=args.clients + 20)
        t0 = time.monotonic()
        dsn = server.start()
        print(f" ready in {time.monotonic() - t0:.1f} s (127.0.0.1:{server.port}, deleted at exit)")
    interrupts: dict[str, dict[str, Any] | Failure] = {}
    try:
        import psycopg2

        print(
            f"PostgreSQL {server_version(dsn)}, psycopg2 {psycopg2.__version__.split()[0]}, "
            f"Python {sys.version.split()[0]}"
        )
        print(f"{args.clients} clients x {args.queries} queries, each mode in its own process:\n")
        outcomes = run_modes(args, modes, dsn)
        report(args, outcomes)
        if args.interrupt:
            interrupts["gevent"] = run_child(args, "interrupt-gevent", dsn, None)
            interrupts["eventlet_bundled"] = run_child(
                args, "interrupt-eventlet-bundled", dsn, None
            )
            report_interrupts(interrupts["gevent"], interrupts["eventlet_bundled"])
        if args.json:
            text = json.dumps(document(args, outcomes, interrupts), indent=2) + "\n"
            Path(args.json).write_text(text, encoding="utf-8")
    finally:
        if server is not None:
            server.stop()
    failed = [MODES[o.mode] for o in outcomes if isinstance(o, Failure)]
    failed += [
        f"the interruption showcase's {part} part"
        for part, outcome in zip(("gevent", "eventlet"), interrupts.values(), strict=False)
        if isinstance(outcome, Failure)
    ]
    with_errors = [MODES[o["mode"]] for o in outcomes if not isinstance(o, Failure) and o["errors"]]
    done = f"\nDone in {time.monotonic() - started:.0f} s"
    done += "; the throwaway server is gone." if server else "."
    print(done)
    if failed or with_errors:
        print(f"Failed: {', '.join(failed + with_errors)} (exit status 1).")
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Run many concurrent PostgreSQL clients with blocking psycopg2, threads, gevent and "
            "eventlet against a throwaway server, and compare."
        )
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    parser.add_argument("--queries", type=int, default=4, help="queries per client (4)")
    parser.add_argument(
        "--sleep", type=float, default=0.05, help="seconds of pg_sleep in 1 query of 4 (0.05)"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, from: {', '.join(MODES)}"
    )
    parser.add_argument(
        "--dsn", help="use this PostgreSQL server instead of starting a throwaway one"
    )
    parser.add_argument(
        "--no-interrupt",
        dest="interrupt",
        action="store_false",
        help="skip the query-interruption showcase",
    )
    parser.add_argument(
        "--mode-timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="give up on a mode's process after this long, and report it as failed (300)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.queries < 1 or args.sleep < 0 or args.mode_timeout <= 0:
        parser.error(
            "--clients and --queries must be at least 1, --sleep not negative, "
            "--mode-timeout positive"
        )
    return args


def main() -> int:
    return parent(parse_args())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
