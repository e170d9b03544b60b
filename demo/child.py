#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen's demo: many concurrent PostgreSQL clients, blocking, on threads, gevent and eventlet.

``hatch run demo:run`` (or ``python demo/run.py`` with the packages importable) starts a
throwaway PostgreSQL of its own, runs the same workload once per mode, each mode in its own
process (a process can be monkey-patched for one scheduler only), prints a table, shows what
happens to a query that is interrupted, and removes the server.

The workload: ``--clients`` clients (200), each opening its own connection and running
``--queries`` queries (4) of which every fourth, starting with the first, is
``pg_sleep(--sleep)`` (50 ms) and the others are small queries. A heartbeat ticks every 10 ms
beside the clients, on the same scheduler; its worst gap between two ticks is how long the
scheduler was frozen.

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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: mode -> label in the report, in the order the modes run.
MODES = {
    "blocking": "blocking psycopg2, 1 thread",
    "threads": "psycopg2, 1 thread/client",
    "gevent": "gevent + psycogreen",
    "eventlet": "eventlet + psycogreen",
    "gevent-unpatched": "gevent, psycopg2 unpatched",
}

SMALL_QUERY = "SELECT n, md5((n + %s)::text) FROM generate_series(1, 20) AS n"
HEARTBEAT = 0.01
EVENTLET_DEPRECATION = "(?s).*Eventlet is deprecated"


# --------------------------------------------------------------------------------------------
# The child: one mode, in a process of its own. Its stdout carries "progress N" lines and, last,
# "result {json}". The scheduler is set up before psycopg2 is imported.
# --------------------------------------------------------------------------------------------


def setup_scheduler(mode: str) -> None:
    if mode in {"gevent", "gevent-unpatched", "interrupt-gevent"}:
        if mode == "gevent-unpatched":
            # psycogreen-gevent's plugin would patch psycopg2 during patch_all(): not here.
            os.environ["PSYCOGREEN_GEVENT_AUTOPATCH"] = "0"
        from gevent import monkey

        monkey.patch_all()
    elif mode in {"eventlet", "interrupt-eventlet-bundled"}:
        import warnings

        # eventlet announces its deprecation on import; the demo still shows it.
        warnings.filterwarnings("ignore", EVENTLET_DEPRECATION)
        import eventlet

        eventlet.monkey_patch()


class Runner:
    """Spawn, join and sleep, the same for threads, gevent and eventlet."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        if mode.startswith("gevent"):
            import gevent

            self.sleep = gevent.sleep
        elif mode == "eventlet":
            import eventlet

            self.sleep = eventlet.sleep
        else:
            self.sleep = time.sleep

    def spawn(self, func: Any, *args: Any) -> Any:
        if self.mode.startswith("gevent"):
            import gevent

            return gevent.spawn(func, *args)
        if self.mode == "eventlet":
            import eventlet

            return eventlet.spawn(func, *args)
        import threading

        thread = threading.Thread(target=func, args=args, daemon=True)
        thread.start()
        return thread

    def join(self, tasks: list[Any]) -> None:
        for task in tasks:
            if self.mode.startswith("gevent"):
                task.join()
            elif self.mode == "eventlet":
                task.wait()
            else:
                task.join()


class Heartbeat:
    """A task ticking every 10 ms on the mode's scheduler; records the longest gap between ticks."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.worst = 0.0
        self.ticks = 0
        self.running = True
        self.task = runner.spawn(self._tick)

    def _tick(self) -> None:
        last = time.perf_counter()
        while self.running:
            self.runner.sleep(HEARTBEAT)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            self.ticks += 1
            last = now

    def stop(self) -> float:
        self.running = False
        self.runner.join([self.task])
        return self.worst


class Stats:
    """Counts shared by the clients: connections made, queries done and in flight, errors."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.connected = 0
        self.done = 0
        self.in_flight = 0
        self.peak = 0
        self.errors: list[str] = []
        self.last_report = 0.0

    def connection_made(self) -> None:
        with self.lock:
            self.connected += 1
            count = self.connected
        self._report("connected", count)

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def end(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.done += 1
            count = self.done
        self._report("progress", count)

    def _report(self, kind: str, count: int) -> None:
        now = time.monotonic()
        if now - self.last_report > 0.1:
            self.last_report = now
            # A plain write: it never yields to the scheduler, so progress shows in every mode.
            os.write(1, f"{kind} {count}\n".encode())


def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    """Connect every client, then run every client's queries at once; time both phases."""
    mode = args.mode
    setup_scheduler(mode)
    import threading

    import psycopg2

    if mode == "gevent":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    elif mode == "eventlet":
        from psycogreen.eventlet import patch_psycopg

        patch_psycopg()
    elif mode == "gevent-unpatched":
        assert psycopg2.extensions.get_wait_callback() is None

    stats = Stats(threading.Lock())
    conns: list[Any] = [None] * args.clients

    def connect(number: int) -> None:
        try:
            conn = psycopg2.connect(args.dsn)
            conn.autocommit = True
        except psycopg2.Error as exc:
            stats.errors.append(f"connect: {exc}".strip())
            return
        conns[number] = conn
        stats.connection_made()

    def work(number: int) -> None:
        conn = conns[number]
        if conn is None:
            return
        cur = conn.cursor()
        for query in range(args.queries):
            stats.begin()
            try:
                if query % 4 == 0:
                    cur.execute("SELECT pg_sleep(%s)", (args.sleep,))
                else:
                    cur.execute(SMALL_QUERY, (number,))
                cur.fetchall()
            except psycopg2.Error as exc:
                stats.errors.append(str(exc).strip())
            finally:
                stats.end()

    runner = Runner(mode)

    def every_client(func: Any) -> float:
        start = time.perf_counter()
        if mode == "blocking":
            for number in range(args.clients):
                func(number)
        else:
            runner.join([runner.spawn(func, number) for number in range(args.clients)])
        return time.perf_counter() - start

    connect_wall = every_client(connect)
    heartbeat = None if mode == "blocking" else Heartbeat(runner)
    wall = every_client(work)
    worst = heartbeat.stop() if heartbeat is not None else None
    for conn in conns:
        if conn is not None:
            conn.close()
    return {
        "mode": mode,
        "connect_wall": connect_wall,
        "wall": wall,
        "queries": stats.done - len(stats.errors),
        "errors": len(stats.errors),
        "first_error": stats.errors[0] if stats.errors else None,
        "peak_in_flight": stats.peak,
        "heartbeat_worst": worst,
    }


def run_interrupt(args: argparse.Namespace) -> dict[str, Any]:
    """Interrupt ``SELECT pg_sleep(5)`` after 0.5 s and look at the server backend afterwards."""
    mode = args.mode
    setup_scheduler(mode)
    import psycopg2
    import psycopg2.errors

    if mode == "interrupt-gevent":
        import gevent

        from psycogreen.core import timeout
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
        scheduler_timeout: Any = gevent.Timeout
        sleep = gevent.sleep
    else:  # eventlet.monkey_patch() installed eventlet's bundled callback: no psycogreen
        import eventlet

        scheduler_timeout = eventlet.Timeout
        sleep = eventlet.sleep

    observer = psycopg2.connect(args.dsn)
    observer.autocommit = True

    def backend(pid: int) -> str:
        with observer.cursor() as cur:
            cur.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = cur.fetchone()
        return "gone" if row is None else f"{row[0]}: {row[1]}"

    result: dict[str, Any] = {}
    conn = psycopg2.connect(args.dsn)
    pid = conn.get_backend_pid()
    start = time.perf_counter()
    try:
        with scheduler_timeout(0.5):
            conn.cursor().execute("SELECT pg_sleep(5)")
        raised = "nothing"
    except scheduler_timeout:
        raised = "gevent.Timeout" if mode == "interrupt-gevent" else "eventlet.Timeout"
    result["scheduler_timeout"] = {
        "raised": raised,
        "after": time.perf_counter() - start,
        "connection_closed": bool(conn.closed),
    }
    sleep(0.2)  # let a cancelled backend finish going away
    result["scheduler_timeout"]["backend_after_200ms"] = backend(pid)
    if mode == "interrupt-eventlet-bundled":
        # Do not leave it sleeping until the server stops.
        with observer.cursor() as cur:
            cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
    else:
        conn = psycopg2.connect(args.dsn)
        pid = conn.get_backend_pid()
        start = time.perf_counter()
        try:
            with timeout(0.5):
                conn.cursor().execute("SELECT pg_sleep(5)")
            raised = "nothing"
        except psycopg2.errors.QueryCanceled:
            raised = "psycopg2.errors.QueryCanceled"
        after = time.perf_counter() - start
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            same_pid = cur.fetchone()[0] == pid
        result["psycogreen_timeout"] = {
            "raised": raised,
            "after": after,
            "connection_closed": bool(conn.closed),
            "same_backend_after_rollback": same_pid,
            "pid": pid,
        }
        conn.close()
    observer.close()
    return result


# --------------------------------------------------------------------------------------------
# The parent: the server, a process per mode, progress, the report.
# --------------------------------------------------------------------------------------------

SPINNER = "|/-\\"


class Progress:
    """One line per mode: redrawn in place on a terminal, written once otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.label = ""
        self.totals: dict[str, int] = {}
        self.frame = 0
        self.start = 0.0

    def begin(self, label: str, clients: int, queries: int) -> None:
        self.label, self.frame = label, 0
        self.totals = {"connections": clients, "queries": clients * queries}
        self.start = time.monotonic()
        if self.tty:
            self.update(0, "connections")
        else:
            print(f"  {label:<28} running ...", end="", flush=True)

    def update(self, done: int, what: str) -> None:
        if not self.tty:
            return
        self.frame += 1
        width = 30
        total = self.totals[what]
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.monotonic() - self.start
        line = (
            f"  {self.label:<28} {SPINNER[self.frame % 4]} [{bar}] "
            f"{done}/{total} {what}  {elapsed:5.1f} s"
        )
        print(f"\r\033[K{line}", end="", flush=True)

    def end(self, summary: str) -> None:
        if self.tty:
            print(f"\r\033[K  {self.label:<28} {summary}", flush=True)
        else:
            print(f" {summary}", flush=True)


def child_command(args: argparse.Namespace, mode: str, dsn: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
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


def run_child(
    args: argparse.Namespace, mode: str, dsn: str, progress: Progress | None
) -> dict[str, Any]:
    """Run ``mode`` in a fresh interpreter, relaying its progress; return its result."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            child_command(args, mode, dsn),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        result: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                kind, _, payload = line.partition(" ")
                if kind == "connected" and progress is not None:
                    progress.update(int(payload), "connections")
                elif kind == "progress" and progress is not None:
                    progress.update(int(payload), "queries")
                elif kind == "result":
                    result = json.loads(payload)
            proc.wait()
        except BaseException:
            proc.kill()  # the child this function started
            proc.wait()
            raise
        if proc.returncode != 0 or result is None:
            errors.seek(0)
            detail = errors.read()[-3000:]
            message = f"mode {mode} failed (exit status {proc.returncode}):\n{detail}"
            raise RuntimeError(message)
    return result


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
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
    rows = []
    for r in results:
        rate = r["queries"] / r["wall"] if r["wall"] > 0 else 0.0
        ratio = f"{base['wall'] / r['wall']:.1f}x" if base and r["wall"] > 0 else "-"
        rows.append(
            (
                MODES[r["mode"]],
                fmt_seconds(r["connect_wall"]),
                fmt_seconds(r["wall"]),
                f"{rate:,.0f}",
                ratio,
                str(r["peak_in_flight"]),
                fmt_seconds(r["heartbeat_worst"]),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"  {first}  {rest}"

    print()
    print(line(header))
    print("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in rows:
        print(line(row))
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
        f"  worst tick gap: longest time between two ticks of a {HEARTBEAT * 1000:.0f} ms "
        "heartbeat on the same scheduler,"
    )
    print("  i.e. how long the scheduler was frozen ('-': blocking has no scheduler).")
    for r in results:
        if r["errors"]:
            print(f"  ! {MODES[r['mode']]}: {r['errors']} errors, first: {r['first_error']}")


def describe(outcome: dict[str, Any]) -> str:
    state = "closed" if outcome["connection_closed"] else "open"
    return f"{outcome['raised']} after {fmt_seconds(outcome['after'])}, connection {state}"


def report_interrupts(gevent_run: dict[str, Any], bundled: dict[str, Any] | None) -> None:
    print()
    print("Interrupting SELECT pg_sleep(5) after 0.5 s, then asking the server about its backend:")
    outcome = gevent_run["scheduler_timeout"]
    print(f"  gevent.Timeout, psycogreen.gevent:      {describe(outcome)}")
    print(f"      server backend 200 ms later:         {outcome['backend_after_200ms']}")
    outcome = gevent_run["psycogreen_timeout"]
    print(f"  psycogreen.core.timeout(0.5):           {describe(outcome)}")
    kept = "the same backend" if outcome["same_backend_after_rollback"] else "a new backend"
    print(f"      after rollback(), the next query ran on {kept} (pid {outcome['pid']})")
    if bundled is not None:
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


def parent(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
        return 2
    if missing := missing_modules(modes, args.interrupt):
        print(
            f"cannot import {', '.join(missing)}: run the demo with `hatch run demo:run`, or "
            "install psycopg2-binary and packages/core, packages/gevent and packages/eventlet "
            "(pip install -e) first"
        )
        return 2
    started = time.monotonic()
    server = None
    dsn = args.dsn
    if dsn is None:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        print("Starting a throwaway PostgreSQL ...", end="", flush=True)
        server = ThrowawayPostgres(max_connections=args.clients + 20)
        t0 = time.monotonic()
        dsn = server.start()
        print(f" ready in {time.monotonic() - t0:.1f} s (127.0.0.1:{server.port}, deleted at exit)")
    try:
        import psycopg2

        print(
            f"PostgreSQL {server_version(dsn)}, psycopg2 {psycopg2.__version__.split()[0]}, "
            f"Python {sys.version.split()[0]}"
        )
        print(f"{args.clients} clients x {args.queries} queries, each mode in its own process:\n")
        results = []
        progress = Progress()
        for mode in modes:
            progress.begin(MODES[mode], args.clients, args.queries)
            try:
                result = run_child(args, mode, dsn, progress)
            except RuntimeError as exc:
                progress.end("FAILED")
                print(exc)
                return 1
            rate = result["queries"] / result["wall"] if result["wall"] > 0 else 0.0
            progress.end(
                f"{result['queries']} queries in {fmt_seconds(result['wall'])} ({rate:,.0f}/s)"
            )
            results.append(result)
        report(args, results)
        interrupts: dict[str, Any] = {}
        if args.interrupt:
            try:
                interrupts["gevent"] = run_child(args, "interrupt-gevent", dsn, None)
                interrupts["eventlet_bundled"] = run_child(
                    args, "interrupt-eventlet-bundled", dsn, None
                )
            except RuntimeError as exc:
                print(f"\nThe interruption showcase failed: {exc}")
                return 1
            report_interrupts(interrupts["gevent"], interrupts["eventlet_bundled"])
        if args.json:
            document = {"settings": vars(args), "results": results, "interrupts": interrupts}
            Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    finally:
        if server is not None:
            server.stop()
    print(
        f"\nDone in {time.monotonic() - started:.0f} s; the throwaway server is gone."
        if server
        else f"\nDone in {time.monotonic() - started:.0f} s."
    )
    return 1 if any(r["errors"] for r in results) else 0


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
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # run one mode: the child process
    args = parser.parse_args(argv)
    if args.clients < 1 or args.queries < 1 or args.sleep < 0:
        parser.error("--clients and --queries must be at least 1, --sleep not negative")
    return args


def main() -> int:
    args = parse_args()
    if args.mode is None:
        return parent(args)
    if args.mode.startswith("interrupt-"):
        result = run_interrupt(args)
    else:
        result = run_clients(args)
    sys.stdout.write(f"result {json.dumps(result)}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
