"""SQLAlchemy on psycogreen's pool: 200 green threads through one engine over 10 connections.

``python green_pool.py gevent`` or ``python green_pool.py eventlet``; prints one JSON line.

The engine keeps no connections of its own (``NullPool``): ``creator=pool.getconn`` checks one
out of the green pool, and ``close_returns=True`` makes SQLAlchemy's ``close()`` give it back.
So the waits, the timeout, the maximum and the safety against killed green threads are the
green pool's. The program checks:

1. 200 green threads x 3 queries through the engine while 20 of them are killed, 5 of those in
   the middle of a query: the others complete every query; afterwards the pool holds at most
   10 connections, all idle, none checked out, and the server has exactly those;
2. with all 10 connections held, ``engine.connect()`` raises the pool's ``PoolTimeout`` (as
   SQLAlchemy's ``OperationalError``) after the pool's timeout;
3. after ``pool.close()`` the server has no connection of the application left.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time

SCHED = sys.argv[1] if len(sys.argv) > 1 else "gevent"
if SCHED == "gevent":
    from gevent import monkey

    monkey.patch_all()
    import gevent

    spawn, sleep = gevent.spawn, gevent.sleep

    def join(threads):
        gevent.joinall(threads)

    def kill(thread):
        thread.kill(block=False)
else:
    import eventlet

    eventlet.monkey_patch()
    spawn, sleep = eventlet.spawn, eventlet.sleep

    def join(threads):
        for thread in threads:
            with contextlib.suppress(BaseException):  # a killed green thread re-raises
                thread.wait()

    def kill(thread):
        thread.kill()


import psycogreen.core  # noqa: E402

psycogreen.core.patch_psycopg()  # after monkey-patching; a no-op if the gevent plugin did it

import psycopg2  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import text  # noqa: E402

from psycogreen.core.pool import ConnectionPool  # noqa: E402

DSN = os.environ.get("DATABASE_DSN", "dbname=postgres")
APP = f"psycogreen-recipe-green-pool-{os.getpid()}"

pool = ConnectionPool(
    DSN,
    min_size=2,
    max_size=10,
    timeout=1.0,  # seconds a green thread waits for a connection
    close_returns=True,  # SQLAlchemy's close() returns the connection to this pool
    kwargs={"application_name": APP},
)
engine = sqlalchemy.create_engine(
    "postgresql+psycopg2://", creator=pool.getconn, poolclass=sqlalchemy.pool.NullPool
)


def server_connections() -> dict[str, int]:
    admin = psycopg2.connect(DSN)
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity"
                " WHERE application_name = %s GROUP BY 1",
                [APP],
            )
            return dict(cur.fetchall())
    finally:
        admin.close()


def many(out: dict) -> None:
    done: list[int] = []
    errors: list[str] = []
    in_query: set[int] = set()

    def work(i: int) -> None:
        try:
            for _ in range(3):
                with engine.connect() as conn:
                    in_query.add(i)
                    try:
                        conn.execute(text("SELECT pg_sleep(0.01)"))
                    finally:
                        in_query.discard(i)
        except Exception as exc:
            errors.append(f"{i}: {type(exc).__name__}: {exc}")
        else:
            done.append(i)

    start = time.perf_counter()
    threads = [spawn(work, i) for i in range(200)]
    deadline = time.perf_counter() + 5
    while len(in_query) < 5 and time.perf_counter() < deadline:
        sleep(0.001)
    querying = sorted(in_query)[:5]
    others = [i for i in range(200) if i not in querying]
    for i in querying + random.Random(8).sample(others, 20 - len(querying)):
        kill(threads[i])
    join(threads)
    out["elapsed"] = time.perf_counter() - start
    out["killed_in_query"] = len(querying)
    out["completed"] = len(done)
    out["errors"] = errors[:5]
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:  # replacements of killed-in-query connections
        stats = pool.get_stats()
        if stats["pool_size"] == stats["pool_available"]:
            break
        sleep(0.01)
    out["stats"] = pool.get_stats()
    out["server"] = server_connections()


def exhausted(out: dict) -> None:
    held = [engine.connect() for _ in range(10)]
    for conn in held:
        conn.execute(text("SELECT 1"))
    start = time.perf_counter()
    try:
        with engine.connect():
            out["exhausted"] = "served"
    except sqlalchemy.exc.OperationalError as exc:
        out["exhausted"] = type(exc.orig).__name__
    out["waited"] = time.perf_counter() - start
    for conn in held:
        conn.close()
    with engine.connect() as conn:
        out["after"] = conn.execute(text("SELECT 42")).scalar()


def main() -> None:
    out: dict = {"scheduler": psycogreen.core.current_scheduler()}
    many(out)
    exhausted(out)
    out["checked_out_end"] = pool.get_stats()["pool_size"] - pool.get_stats()["pool_available"]
    pool.close()
    deadline = time.perf_counter() + 5
    while server_connections() and time.perf_counter() < deadline:
        sleep(0.02)
    out["server_after_close"] = server_connections()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
