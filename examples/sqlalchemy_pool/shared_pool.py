"""One SQLAlchemy ``QueuePool`` (10 connections) shared by 200 green threads.

``python shared_pool.py gevent`` or ``python shared_pool.py eventlet``; prints one JSON line.

Monkey-patching comes first, before SQLAlchemy is imported: the pool waits on a
``threading.Condition``, which must be the scheduler's. psycopg2 is patched right after (under
gevent psycogreen-gevent's plugin already did it; the explicit call is then a no-op). The
program then checks what a deployment relies on:

1. 200 green threads x 3 queries through 10 connections (``pool_timeout`` 30 s), while 20 of
   them are killed, 5 of those in the middle of a query: every other query succeeds, and
   afterwards the pool has nothing checked out and the server has at most 10 connections, none
   left in a transaction;
2. on a second pool of 10 with ``pool_timeout`` 1 s and all 10 connections held, ``connect()``
   raises ``sqlalchemy.exc.TimeoutError`` on time while the hub keeps running; then the pool
   serves again.
"""

from __future__ import annotations

import contextlib
import gc
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

    def spawn(func, *args):
        return gevent.spawn(func, *args)

    def join(threads):
        gevent.joinall(threads)

    def kill(thread):
        thread.kill(block=False)

    sleep = gevent.sleep
else:
    import eventlet

    eventlet.monkey_patch()

    def spawn(func, *args):
        return eventlet.spawn(func, *args)

    def _wait(thread) -> None:
        with contextlib.suppress(BaseException):  # a killed green thread re-raises GreenletExit
            thread.wait()

    def join(threads):
        for thread in threads:
            _wait(thread)

    def kill(thread):
        thread.kill()

    sleep = eventlet.sleep

import psycogreen.core  # noqa: E402

psycogreen.core.patch_psycopg()  # after monkey-patching; a no-op if the plugin did it

import psycopg2  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlalchemy import text  # noqa: E402

DSN = os.environ.get("DATABASE_DSN", "dbname=postgres")
APP = f"psycogreen-recipe-pool-{os.getpid()}"
POOL_SIZE = 10

engine = sqlalchemy.create_engine(
    "postgresql+psycopg2://",
    creator=lambda: psycopg2.connect(DSN, application_name=APP),
    pool_size=POOL_SIZE,
    max_overflow=0,  # never more than 10 server connections
    pool_timeout=30,  # seconds to wait for a free connection (SQLAlchemy's default)
    pool_pre_ping=True,
)
# The same pool settings with a short wait, to show pool timeouts.
strict = sqlalchemy.create_engine(
    "postgresql+psycopg2://",
    creator=lambda: psycopg2.connect(DSN, application_name=APP + "-strict"),
    pool_size=POOL_SIZE,
    max_overflow=0,
    pool_timeout=1.0,
)


def server_connections(admin) -> dict[str, int]:
    rows = admin.execute(
        text(
            "SELECT state, count(*) FROM pg_stat_activity"
            " WHERE application_name IN (:app, :strict) GROUP BY state"
        ),
        {"app": APP, "strict": APP + "-strict"},
    ).all()
    return {state or "?": n for state, n in rows}


def many_green_threads(out: dict) -> None:
    done: list[int] = []
    errors: list[str] = []
    in_query: set[int] = set()
    busy: list[int] = []

    def query(i: int) -> None:
        with engine.connect() as conn:
            in_query.add(i)
            try:
                conn.execute(text("SELECT pg_sleep(0.01)"))
            finally:
                in_query.discard(i)

    def work(i: int) -> None:
        try:
            for _ in range(3):
                query(i)
        except sqlalchemy.exc.TimeoutError:
            busy.append(i)  # no free connection within pool_timeout
        except Exception as exc:
            errors.append(f"{i}: {type(exc).__name__}: {exc}")
        else:
            done.append(i)

    started = time.perf_counter()
    threads = [spawn(work, i) for i in range(200)]
    deadline = time.perf_counter() + 5
    while len(in_query) < 5 and time.perf_counter() < deadline:
        sleep(0.001)  # until some are inside a query
    # Kill 20: 5 in the middle of a query, the others wherever they are (most wait for the pool).
    querying = sorted(in_query)[:5]
    others = [i for i in range(200) if i not in querying]
    victims = querying + random.Random(8).sample(others, 20 - len(querying))
    for i in victims:
        kill(threads[i])
    out["killed_in_query"] = len(querying)
    join(threads)
    out["elapsed"] = time.perf_counter() - started
    out["completed"] = len(done)
    out["pool_timeouts_under_load"] = len(busy)
    out["errors"] = errors[:5]
    out["checked_out_after"] = engine.pool.checkedout()


def pool_timeout(out: dict) -> None:
    def hold() -> None:
        with strict.connect() as conn:
            conn.execute(text("SELECT pg_sleep(1.5)"))

    holders = [spawn(hold) for _ in range(POOL_SIZE)]
    sleep(0.1)  # all 10 connections are now checked out and busy
    ticks: list[float] = []

    def heartbeat() -> None:
        last = time.perf_counter()
        for _ in range(60):
            sleep(0.02)
            now = time.perf_counter()
            ticks.append(now - last)
            last = now

    beat = spawn(heartbeat)
    waits: list[tuple[str, float]] = []

    def want() -> None:
        t = time.perf_counter()
        try:
            with strict.connect() as conn:
                conn.execute(text("SELECT 1"))
            waits.append(("ok", time.perf_counter() - t))
        except sqlalchemy.exc.TimeoutError:
            waits.append(("TimeoutError", time.perf_counter() - t))

    wanting = [spawn(want) for _ in range(5)]
    join([*wanting, beat])
    join(holders)
    out["timeouts"] = waits
    out["max_tick"] = max(ticks)
    with strict.connect() as conn:
        out["after_timeouts"] = conn.execute(text("SELECT 42")).scalar()
    out["checked_out_end"] = strict.pool.checkedout()


def main() -> None:
    out: dict = {"scheduler": psycogreen.core.current_scheduler()}
    many_green_threads(out)
    pool_timeout(out)
    admin = sqlalchemy.create_engine(
        "postgresql+psycopg2://",
        creator=lambda: psycopg2.connect(DSN),
        poolclass=sqlalchemy.pool.NullPool,
    )
    with admin.connect() as conn:
        out["server"] = server_connections(conn)  # both pools: up to 10 + 10
    engine.dispose()
    strict.dispose()
    with admin.connect() as conn:
        out["server_after_dispose"] = server_connections(conn)
    # A green thread killed while the pool was opening or handing over a connection can leave
    # that connection unreachable but not yet closed: the garbage collector closes it.
    gc.collect()
    with admin.connect() as conn:
        out["server_after_gc"] = server_connections(conn)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
