# SPDX-License-Identifier: BSD-3-Clause
"""One mode of the demo (``demo/run.py``), in a process of its own.

A process can be monkey-patched for one scheduler only, so the demo runs this file once per
mode. The scheduler is set up before psycopg2 is imported. Progress goes to the shared counters
of ``demo/progress.py`` (``--progress``), the result to stdout as JSON, on the last line; anything
else the process prints, a traceback included, is for the parent to show if the mode fails.

The workload: ``--clients`` clients, each opening its own connection and running ``--queries``
queries of which every fourth, starting with the first, is ``pg_sleep(--sleep)`` and the others
are small queries. A heartbeat ticks every 10 ms beside the clients, on the same scheduler; its
worst gap between two ticks is how long the scheduler was frozen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from progress import Counters

SMALL_QUERY = "SELECT n, md5((n + %s)::text) FROM generate_series(1, 20) AS n"
HEARTBEAT = 0.01
EVENTLET_DEPRECATION = "(?s).*Eventlet is deprecated"
CLIENT_MODES = ("blocking", "threads", "gevent", "eventlet", "gevent-unpatched")
INTERRUPT_MODES = ("interrupt-gevent", "interrupt-eventlet-bundled")


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

    def __init__(self, lock: Any, counters: Counters | None) -> None:
        self.lock = lock
        self.counters = counters
        self.connected = 0
        self.done = 0
        self.in_flight = 0
        self.peak = 0
        self.errors: list[str] = []

    def connection_made(self) -> None:
        with self.lock:
            self.connected += 1
            if self.counters is not None:
                self.counters.store("connections", self.connected)

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def end(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.done += 1
            if self.counters is not None:
                self.counters.store("queries", self.done)


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

    counters = Counters(Path(args.progress)) if args.progress else None
    stats = Stats(threading.Lock(), counters)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One mode of the demo (see demo/run.py).")
    parser.add_argument("--mode", required=True, choices=CLIENT_MODES + INTERRUPT_MODES)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--progress", help="the shared counters' file, made by the parent")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.mode in INTERRUPT_MODES:
        result = run_interrupt(args)
    else:
        result = run_clients(args)
    print(json.dumps(result), flush=True)  # the last line: the parent reads it
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
