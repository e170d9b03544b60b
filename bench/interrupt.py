# SPDX-License-Identifier: BSD-3-Clause
"""How fast an interrupted query stops on the server, and how long the hub stalls meanwhile.

    python bench/interrupt.py [--dsn DSN] [--runs N] [--schedulers gevent,eventlet]

Without ``--dsn`` a throwaway PostgreSQL is started. Each scheduler runs in a process of its
own. A greenlet runs ``SELECT pg_sleep(5)`` and is interrupted after 0.1 s; another greenlet
polls ``pg_stat_activity`` on a separate connection until the backend is no longer active, and a
1 ms heartbeat records the hub's worst gap from the interrupt until the backend is idle (or,
for a black-holed server, until the interrupt reaches the interrupted code).

Cases: a scheduler ``Timeout``; a kill; psycogreen's deadline (``psycogreen.core.timeout``);
``conn.cancel()`` called from another greenlet, psycogreen's (a patched ``psycopg2.connect``
returns connections whose ``cancel()`` goes through the scheduler) and psycopg2's own
(``psycopg2.extensions.connection.cancel(conn)``, for comparison: it blocks, with the GIL held,
for the round trip). Then the same server black-holed (a frozen TCP proxy: the cancel request
goes unanswered too): psycogreen's cancel gives up after its bound (0.5 s here) while the hub
keeps running; psycopg2's ``conn.cancel()`` blocks the whole process until the network comes
back (after 1 s here: the proxy thaws by itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(1, str(ROOT))  # tests.support: the monkey-patching, the child-process runner

CHILD = __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child"
SCHED = sys.argv[2] if CHILD else ""

from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for(SCHED)

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import importlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.support.child import SOURCES, run_json  # noqa: E402

INTERRUPT_AFTER = 0.1
CANCEL_BOUND = 0.5
CASES = (
    "Timeout",
    "kill",
    "psycogreen deadline",
    "psycogreen conn.cancel()",
    "psycopg2 conn.cancel()",
    "black-holed: Timeout",
    "black-holed: psycogreen conn.cancel()",
    "black-holed: psycopg2 conn.cancel()",
)


# --- the measuring process --------------------------------------------------------------------


def _child(dsn: str, runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import psycopg2

    from psycogreen import core
    from tests.support.green import Scheduler
    from tests.support.proxy import Proxy

    sched = Scheduler(SCHED)
    importlib.import_module(f"psycogreen.{SCHED}").patch_psycopg()
    core.set_cancel_timeout(CANCEL_BOUND)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    wcur = watcher.cursor()
    params = psycopg2.extensions.parse_dsn(dsn)

    def active(pid: int) -> bool:
        wcur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = wcur.fetchone()
        return row is not None and row[0] == "active"

    def one(case: str, proxy: Any) -> tuple[float | None, float, float]:
        blackholed = case.startswith("black-holed")
        port = proxy.port if blackholed else None
        target = dsn if port is None else f"{dsn} host=127.0.0.1 port={port}"
        conn = psycopg2.connect(target)
        pid = conn.get_backend_pid()
        marks: dict[str, float] = {}
        gaps: list[float] = []
        done: list[bool] = []

        def victim() -> None:
            cur = conn.cursor()
            try:
                if case.endswith("Timeout"):
                    with sched.timeout(INTERRUPT_AFTER):
                        cur.execute("SELECT pg_sleep(5)")
                elif case == "psycogreen deadline":
                    with core.timeout(INTERRUPT_AFTER):
                        cur.execute("SELECT pg_sleep(5)")
                else:
                    cur.execute("SELECT pg_sleep(5)")
            except BaseException:
                marks["raised"] = time.perf_counter()

        def heartbeat() -> None:
            last = time.perf_counter()
            while not done:
                sched.sleep(0.001)
                now = time.perf_counter()
                if now >= marks.get("interrupt", now + 1):
                    gaps.append(now - last - 0.001)
                last = now

        beat = sched.spawn(heartbeat)
        task = sched.spawn(victim)
        sched.sleep(0.02)
        if blackholed:
            proxy.freeze()
        sched.sleep(INTERRUPT_AFTER - 0.02)
        marks["interrupt"] = time.perf_counter()
        if case == "kill":
            sched.kill(task)
        elif case.endswith("psycopg2 conn.cancel()"):
            if blackholed:
                # the network comes back after 1 s; until then conn.cancel() blocks the whole
                # process, GIL held: the proxy thaws by itself
                proxy.thaw_after(1.0)
            psycopg2.extensions.connection.cancel(conn)
        elif case.endswith("psycogreen conn.cancel()"):
            try:
                conn.cancel()
            except psycopg2.OperationalError:
                # black-holed: given up after the cancel bound, the hub running meanwhile;
                # the network comes back, and the cancel is sent again
                marks["gave_up"] = time.perf_counter()
                proxy.thaw()
                conn.cancel()
        settle: float | None = None
        if blackholed:
            sched.join([task])
            if not case.endswith("psycopg2 conn.cancel()"):
                proxy.thaw()
        else:
            while active(pid) and time.perf_counter() - marks["interrupt"] < 5:
                sched.sleep(0.0005)
            settle = time.perf_counter() - marks["interrupt"]
            sched.join([task])
        done.append(True)
        sched.join([beat])
        conn.close()
        return settle, max(gaps, default=0.0), marks.get("raised", 0.0) - marks["interrupt"]

    out: dict[str, Any] = {}
    with Proxy(params.get("host", "127.0.0.1"), int(params.get("port", 5432))) as proxy:
        for case in CASES:
            count = 1 if case.startswith("black-holed") else runs
            results = [one(case, proxy) for _ in range(count)]
            out[case] = {
                "settle": [r[0] for r in results if r[0] is not None],
                "gap": [r[1] for r in results],
                "raised": [r[2] for r in results],
            }
    watcher.close()
    return out


# --- the table --------------------------------------------------------------------------------


def _run_child(sched: str, dsn: str, runs: int) -> dict[str, Any]:
    return dict(run_json([__file__, "--child", sched, dsn, runs], paths=SOURCES, timeout=600))


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.1f}"
    return f"{statistics.median(values) * 1000:.1f} / {max(values) * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="the server to connect to (default: a throwaway one)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--schedulers", default="gevent,eventlet")
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if not dsn:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        server.start()
        dsn = server.dsn
    try:
        results = {s: _run_child(s, dsn, args.runs) for s in args.schedulers.split(",")}
    finally:
        if server is not None:
            server.stop()
    import psycopg2
    import psycopg2.extensions

    print(
        f"Interrupting `pg_sleep(5)` after {INTERRUPT_AFTER:g} s: milliseconds from the "
        f"interrupt until the backend is no longer active, and the hub's worst gap meanwhile "
        f"(1 ms heartbeat), median / max of {args.runs} runs (black-holed: one run, cancel "
        f"bound {CANCEL_BOUND:g} s, network back after 1 s); psycopg2 "
        f"{psycopg2.__version__.split()[0]}, libpq {psycopg2.extensions.libpq_version()}, "
        f"Python {sys.version.split()[0]}\n"
    )
    print(
        "| scheduler | case | interrupt → backend idle (ms) | interrupt → exception in the "
        "interrupted greenlet (ms) | hub worst gap (ms) |"
    )
    print("|---|---|---|---|---|")
    for sched, cases in results.items():
        for case in CASES:
            seen = cases[case]
            print(
                f"| {sched} | {case} | {_ms(seen['settle'])} | {_ms(seen['raised'])} "
                f"| {_ms(seen['gap'])} |"
            )


if __name__ == "__main__":
    if CHILD:
        print(json.dumps(_child(sys.argv[3], int(sys.argv[4]))))
    else:
        main()
