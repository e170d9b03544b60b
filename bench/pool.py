# SPDX-License-Identifier: BSD-3-Clause
"""The pool against psycopg_pool (psycopg 3), SQLAlchemy's QueuePool and django-db-geventpool.

    python bench/pool.py [--dsn DSN] [--seconds S] [--checkouts N]

Without ``--dsn`` a throwaway PostgreSQL is started. Every variant runs under gevent in a
process of its own, one after the other, in one run:

1. checkout + return: client CPU per ``with pool.connection(): pass`` (no query), ten
   connections, all idle;
2. ``SELECT 1`` throughput through a pool of ten at 10, 32 and 200 greenlets (autocommit, so one
   round trip per query), and through ten dedicated connections, one greenlet each (a cursor
   per query everywhere);
3. the kill experiment: 300 greenlets doing checkouts over ``max_size=10`` while 100 of them
   are killed at random; then the pool's size and idle count, whether a checkout still works,
   and the backends left on the server after ``close()``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(1, str(ROOT))  # tests.support: the monkey-patching, the child-process runner

CHILD = __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--child"
if CHILD:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402 (after monkey-patching, on purpose)
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.support.child import ChildFailedError, run_json  # noqa: E402

POOLS = ("psycogreen", "psycopg_pool", "queuepool", "geventpool")


def _app(variant: str) -> str:
    return f"bench-pool-{variant}-{os.getpid()}"


def make_pool(variant: str, dsn: str, app: str, *, autocommit: bool = False) -> Any:
    """A pool of 10 and its checkout context: ``(pool, checkout, query, close, stats)``."""
    if variant == "psycogreen":
        import psycogreen.gevent
        from psycogreen.core.pool import ConnectionPool

        psycogreen.gevent.patch_psycopg()

        def configure(conn: Any) -> None:
            conn.autocommit = autocommit

        pool = ConnectionPool(
            dsn, min_size=10, max_size=10, kwargs={"application_name": app}, configure=configure
        )
        pool.wait()

        def query(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()

        return pool, pool.connection, query, pool.close, pool.get_stats
    if variant == "psycopg_pool":
        import psycopg_pool

        pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=10,
            max_size=10,
            kwargs={"application_name": app, "autocommit": autocommit},
            open=True,
        )
        pool.wait()

        def query(conn: Any) -> None:
            conn.execute("SELECT 1").fetchone()

        return pool, pool.connection, query, pool.close, pool.get_stats
    import psycopg2

    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()

    def connect() -> Any:
        conn = psycopg2.connect(dsn, application_name=app)
        conn.autocommit = autocommit
        return conn

    if variant == "queuepool":
        from sqlalchemy.pool import QueuePool

        pool = QueuePool(connect, pool_size=10, max_overflow=0, timeout=30)
        warm = [pool.connect() for _ in range(10)]
        for conn in warm:
            conn.close()

        class Checkout:
            def __enter__(self) -> Any:
                self.conn = pool.connect()
                return self.conn

            def __exit__(self, *exc: object) -> None:
                self.conn.close()

        return pool, Checkout, None, pool.dispose, dict
    if variant == "geventpool":
        from django_db_geventpool.backends.pool import DatabaseConnectionPool

        class GeventPool(DatabaseConnectionPool):  # the shape of its psycopg2 backend's pool
            DBERROR = psycopg2.DatabaseError

            def create_connection(self) -> Any:
                return connect()

            def check_usable(self, connection: Any) -> None:
                connection.cursor().execute("SELECT 1")

        pool = GeventPool(maxsize=10, reuse=10)
        warm = [pool.get() for _ in range(10)]
        for conn in warm:
            pool.put(conn)

        class GeventCheckout:
            def __enter__(self) -> Any:
                self.conn = pool.get()
                return self.conn

            def __exit__(self, *exc: object) -> None:
                pool.put(self.conn)

        return pool, GeventCheckout, None, pool.close, dict
    raise SystemExit(f"unknown variant {variant!r}")


def checkout_cost(variant: str, dsn: str, n: int) -> dict[str, Any]:
    _pool, checkout, _query, close, _stats = make_pool(variant, dsn, _app(variant))
    for _ in range(min(n, 1000)):  # warm up
        with checkout():
            pass
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        with checkout():
            pass
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    close()
    return {"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6}


def _measure(loops: list[Any], seconds: float) -> dict[str, float]:
    """Run the ``loops`` (each ``loop(stop) -> count``) in greenlets for ``seconds``."""
    import gevent

    cpu = time.process_time()
    start = time.perf_counter()
    stop = start + seconds
    tasks = [gevent.spawn(loop, stop) for loop in loops]
    gevent.joinall(tasks)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    count = sum(task.value for task in tasks)
    return {"qps": count / wall, "cpu_us": cpu / max(count, 1) * 1e6}


def _dedicated_loops(dsn: str) -> list[Any]:
    import psycopg2

    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()
    conns = [psycopg2.connect(dsn) for _ in range(10)]
    for conn in conns:
        conn.autocommit = True

    def own(conn: Any, stop: float) -> int:
        count = 0
        while time.perf_counter() < stop:
            with conn.cursor() as cur:  # a cursor per query, as through the pool
                cur.execute("SELECT 1")
                cur.fetchone()
            count += 1
        return count

    return [functools.partial(own, conn) for conn in conns]


def throughput(variant: str, dsn: str, greenlets: int, seconds: float) -> dict[str, Any]:
    if variant == "dedicated":
        return _measure(_dedicated_loops(dsn), seconds)
    _pool, checkout, query, close, _stats = make_pool(variant, dsn, _app(variant), autocommit=True)

    def loop(stop: float) -> int:
        count = 0
        while time.perf_counter() < stop:
            with checkout() as conn:
                query(conn)
            count += 1
        return count

    out = _measure([loop] * greenlets, seconds)
    close()
    return out


def paired(dsn: str, greenlets: int, seconds: float) -> dict[str, Any]:
    """The pool and 10 dedicated connections in one process, in turn: the process's own noise
    (where it landed in memory, which core it got) cancels out of the ratio."""
    _pool, checkout, query, close, _stats = make_pool(
        "psycogreen", dsn, _app("paired"), autocommit=True
    )
    dedicated = _dedicated_loops(dsn)

    def loop(stop: float) -> int:
        count = 0
        while time.perf_counter() < stop:
            with checkout() as conn:
                query(conn)
            count += 1
        return count

    ratios = []
    for _ in range(3):
        pooled = _measure([loop] * greenlets, seconds / 6)
        own = _measure(dedicated, seconds / 6)
        ratios.append(pooled["qps"] / own["qps"])
    close()
    return {"ratio": statistics.median(ratios)}


def kills(variant: str, dsn: str, seed: int = 7) -> dict[str, Any]:
    import gevent
    import psycopg2

    rng = random.Random(seed)
    app = _app(variant)
    pool, checkout, _query, close, stats = make_pool(variant, dsn, app)

    def work() -> None:
        for _ in range(5):
            try:
                with checkout() as conn:
                    if variant == "psycopg_pool":
                        conn.execute("SELECT pg_sleep(0.01)")
                    else:
                        with conn.cursor() as cur:
                            cur.execute("SELECT pg_sleep(0.01)")
            except Exception:  # a pool timeout: the experiment counts what is left afterwards
                return

    workers = [gevent.spawn(work) for _ in range(300)]
    for victim in rng.sample(workers, 100):
        gevent.spawn_later(rng.uniform(0, 0.3), victim.kill, block=False)
    gevent.joinall(workers, timeout=60)
    gevent.sleep(0.5)
    after = stats()
    try:
        with checkout() if variant != "psycopg_pool" else pool.connection(timeout=2):
            works = True
    except Exception:
        works = False
    close()
    gevent.sleep(1.0)
    admin = psycopg2.connect(dsn)
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app])
        left = cur.fetchone()[0]
    admin.close()
    return {
        "pool_size": after.get("pool_size"),
        "pool_available": after.get("pool_available"),
        "checkout_after": works,
        "backends_after_close": left,
    }


def child(argv: list[str]) -> None:
    test, variant, dsn = argv[:3]
    if test == "checkout":
        out = checkout_cost(variant, dsn, int(argv[3]))
    elif test == "paired":
        out = paired(dsn, int(argv[3]), float(argv[4]))
    elif test == "throughput":
        out = throughput(variant, dsn, int(argv[3]), float(argv[4]))
    else:
        out = kills(variant, dsn)
    print(json.dumps(out), flush=True)


def run_child(*args: Any) -> dict[str, Any]:
    try:
        out = run_json([__file__, "--child", *args], env={"PYTHONWARNINGS": "ignore"}, timeout=600)
    except ChildFailedError as exc:
        return {"error": exc.reason}
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--checkouts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        dsn = server.start()
    try:
        print("1. checkout + return, client CPU per `with pool.connection(): pass`, under gevent")
        samples: dict[str, list[float]] = {v: [] for v in POOLS}
        for _ in range(args.rounds):
            for variant in POOLS:
                out = run_child("checkout", variant, dsn, args.checkouts)
                if "error" in out:
                    raise SystemExit(f"{variant}: {out['error']}")
                samples[variant].append(out["cpu_us"])
        cost = {v: statistics.median(s) for v, s in samples.items()}
        for variant, us in cost.items():
            ratio = us / cost["psycopg_pool"]
            print(f"   {variant:14} {us:8.1f} us  {ratio:5.2f}x psycopg_pool")
        print(
            "2. SELECT 1 through a pool of 10 (autocommit): queries/s and client CPU per query, "
            f"medians of {args.rounds} rounds (each round runs every variant, in turn)"
        )
        cases = [("dedicated", 10)] + [
            (v, g) for g in (10, 32, 200) for v in ("psycogreen", "psycopg_pool")
        ]
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {case: [] for case in cases}
        for _ in range(args.rounds):
            for variant, greenlets in cases:
                out = run_child("throughput", variant, dsn, greenlets, args.seconds)
                if "error" in out:
                    raise SystemExit(f"{variant} at {greenlets} greenlets: {out['error']}")
                runs[variant, greenlets].append(out)
        qps = {case: statistics.median(r["qps"] for r in rs) for case, rs in runs.items()}
        cpu = {case: statistics.median(r["cpu_us"] for r in rs) for case, rs in runs.items()}
        base = qps["dedicated", 10]
        print(f"   10 dedicated connections      {base:8.0f} q/s {cpu['dedicated', 10]:6.0f} us")
        for variant, greenlets in cases[1:]:
            case = (variant, greenlets)
            print(
                f"   {greenlets:3} greenlets {variant:14} {qps[case]:8.0f} q/s {cpu[case]:6.0f} us"
                f"  {qps[case] / qps['psycopg_pool', greenlets]:5.2f}x psycopg_pool"
                f"  {qps[case] / base:5.2f}x dedicated"
            )
        for greenlets in (10, 32, 200):
            out = run_child("paired", "psycogreen", dsn, greenlets, args.seconds * 3)
            print(
                f"   {greenlets:3} greenlets psycogreen against 10 dedicated connections in the"
                f" same process, in turn: {out.get('ratio', 0):5.2f}x"
            )
        print("3. 300 greenlets over max_size=10, 100 killed at random")
        for variant in ("psycogreen", "psycopg_pool"):
            out = run_child("kills", variant, dsn)
            print(f"   {variant:14} {out}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    if CHILD:
        child(sys.argv[2:])
    else:
        main()
