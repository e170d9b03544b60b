# SPDX-License-Identifier: BSD-3-Clause
"""Pool scenarios, each run in a process monkey-patched for one scheduler (tests.support.green).

Every scenario names its pool's connections with an ``application_name`` of its own, so that
``pg_stat_activity`` counts exactly the pool's backends.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import time
from typing import Any

import psycopg2
import psycopg2.extensions

from psycogreen.core.pool import ConnectionPool, PoolMisuseError, PoolTimeout, TooManyRequests
from tests.support.green import Heartbeat, Scheduler
from tests.support.proxy import Proxy


def _patch(sched: Scheduler) -> None:
    """Patch psycopg2 for the scheduler under test; the pool made after it waits through it."""
    importlib.import_module(f"psycogreen.{sched.name}").patch_psycopg()


def _app(kind: str) -> str:
    return f"psycogreen-pool-{kind}-{os.getpid()}"


def _admin(dsn: str) -> Any:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _backends(admin: Any, app: str) -> int:
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app])
        return int(cur.fetchone()[0])


# The waits below end as soon as their condition holds; the bound is for a machine so loaded
# that connects and backend exits take seconds, where a failure would measure the machine.
SETTLE = 15.0


def _settle(
    sched: Scheduler, pool: ConnectionPool, admin: Any, app: str, seconds: float = SETTLE
) -> None:
    """Wait until no connect is in progress and the server shows exactly the pool's backends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        idle = stats["pool_size"] == stats["pool_available"]
        if idle and stats["requests_waiting"] == 0 and _backends(admin, app) == stats["pool_size"]:
            return
        sched.sleep(0.02)


def _gone(sched: Scheduler, admin: Any, app: str, seconds: float = SETTLE) -> int:
    """Wait until the server has no backend of ``app``; how many are left."""
    deadline = time.monotonic() + seconds
    while (left := _backends(admin, app)) and time.monotonic() < deadline:
        sched.sleep(0.02)
    return left


def many_over_max(
    sched: Scheduler,
    dsn: str,
    *,
    requests: int = 1000,
    max_size: int = 10,
    connect_delay: float = 0.2,
    query: float = 0.002,
) -> dict[str, Any]:
    """``requests`` greenlets over ``max_size`` connections whose connects take ``connect_delay``.

    A monitor samples ``pg_stat_activity`` (and the pool's size) every few milliseconds. Half
    the requests wait at most 0.1 s, so that many time out while the pool is being filled.
    """
    _patch(sched)
    params = psycopg2.extensions.parse_dsn(dsn)
    app = _app("many")
    admin = _admin(dsn)
    with Proxy(params["host"], int(params["port"])) as proxy:
        proxy.delay(connect_delay)
        via = f"host=127.0.0.1 port={proxy.port} user={params['user']} dbname={params['dbname']}"
        pool = ConnectionPool(
            via, min_size=0, max_size=max_size, kwargs={"application_name": app}, timeout=10
        )
        peak = {"backends": 0, "size": 0, "samples": 0}
        running = True

        def monitor() -> None:
            while running:
                peak["backends"] = max(peak["backends"], _backends(admin, app))
                peak["size"] = max(peak["size"], pool.get_stats()["pool_size"])
                peak["samples"] += 1
                sched.sleep(0.003)

        outcome = {"ok": 0, "timeout": 0}
        errors: list[str] = []

        def request(i: int) -> None:
            try:
                with pool.connection(timeout=0.1 if i % 2 else 10) as conn, conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(%s)", [query])
                outcome["ok"] += 1
            except PoolTimeout:
                outcome["timeout"] += 1
            except Exception as exc:
                errors.append(repr(exc))

        watcher = sched.spawn(monitor)
        start = time.perf_counter()
        sched.join([sched.spawn(request, i) for i in range(requests)])
        elapsed = time.perf_counter() - start
        running = False
        sched.join([watcher])
        stats = pool.get_stats()
        pool.close()
        left = _gone(sched, admin, app)
    admin.close()
    return {
        **outcome,
        "errors": errors[:5],
        "peak": peak,
        "elapsed": elapsed,
        "stats": stats,
        "left": left,
    }


def timeout_bound(
    sched: Scheduler, dsn: str, *, wait: float = 0.3, waiters: int = 20
) -> dict[str, Any]:
    """An exhausted pool: each request times out after ``wait``; one more is refused at once."""
    _patch(sched)
    app = _app("timeout")
    pool = ConnectionPool(
        dsn, min_size=2, max_size=2, max_waiting=waiters, kwargs={"application_name": app}
    )
    pool.wait(10)
    held = [pool.getconn(), pool.getconn()]
    elapsed: list[float] = []
    kinds: list[str] = []

    def waiter() -> None:
        start = time.perf_counter()
        try:
            pool.getconn(timeout=wait)
            kinds.append("served")
        except PoolTimeout:
            kinds.append("PoolTimeout")
        elapsed.append(time.perf_counter() - start)

    beat = Heartbeat(sched, 0.005)
    tasks = [sched.spawn(waiter) for _ in range(waiters)]
    sched.sleep(0.05)  # every waiter is queued
    queued = pool.get_stats()["requests_waiting"]
    start = time.perf_counter()
    try:
        pool.getconn(timeout=5)
        refused = "served"
    except TooManyRequests:
        refused = "TooManyRequests"
    refused_after = time.perf_counter() - start
    sched.join(tasks)
    hub_late = beat.stop()
    for conn in held:
        pool.putconn(conn)
    with pool.connection(timeout=1) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        after = cur.fetchone()[0]
    stats = pool.get_stats()
    pool.close()
    return {
        "elapsed": elapsed,
        "kinds": kinds,
        "queued": queued,
        "refused": refused,
        "refused_after": refused_after,
        "hub_late": hub_late,
        "after": after,
        "stats": stats,
    }


def terminated(sched: Scheduler, dsn: str, *, check: bool) -> dict[str, Any]:
    """``pg_terminate_backend`` on every pooled backend, then checkouts, with or without ``check``."""
    _patch(sched)
    app = _app(f"terminated-{int(check)}")
    admin = _admin(dsn)
    pool = ConnectionPool(
        dsn,
        min_size=4,
        max_size=4,
        kwargs={"application_name": app},
        check=ConnectionPool.check_connection if check else None,
    )
    pool.wait(10)
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
        before = {row[0] for row in cur.fetchall()}
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [app],
        )
    gone_left = _gone(sched, admin, app)
    outcomes: list[list[Any]] = []
    for _ in range(8):
        try:
            with pool.connection(timeout=5) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                outcomes.append(["ok", cur.fetchone()[0] in before])
        except psycopg2.OperationalError as exc:
            outcomes.append(["error", type(exc).__name__])
    # Without a check, broken connections not handed out yet are still idle (replacements
    # came first: the pool hands out the most recently returned); check() finds them.
    lost_before = pool.get_stats()["connections_lost"]
    pool.check()
    _settle(sched, pool, admin, app)
    stats = pool.get_stats()
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
        after = {row[0] for row in cur.fetchall()}
    pool.close()
    left = _gone(sched, admin, app)
    admin.close()
    return {
        "before": len(before),
        "gone_left": gone_left,
        "outcomes": outcomes,
        "lost_before_check": lost_before,
        "stats": stats,
        "after": len(after),
        "reused": len(after & before),
        "left": left,
    }


def _run(sched: Scheduler, argv: list[str]) -> int:
    """Run a command without blocking the scheduler: poll for its end."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        sched.sleep(0.02)
    return proc.returncode


def restart(
    sched: Scheduler, dsn: str, *, server: str, stop: list[str], start: list[str]
) -> dict[str, Any]:
    """The server restarts: how soon after it is back the pool holds ``min_size`` again."""
    _patch(sched)
    app = _app("restart")
    pool = ConnectionPool(server, min_size=4, max_size=4, kwargs={"application_name": app})
    pool.wait(10)
    stopped = _run(sched, stop)
    pool.check()  # finds the 4 broken connections: discarded, replacements start failing
    first_failure = None
    deadline = time.monotonic() + 5
    while first_failure is None and time.monotonic() < deadline:
        if pool.get_stats()["connections_errors"]:
            first_failure = time.monotonic()
        sched.sleep(0.005)
    sched.sleep(1.5)  # a few attempts fail meanwhile
    failed_attempts = pool.get_stats()["connections_errors"]
    started = _run(sched, start)
    up = time.monotonic()
    admin = _admin(server)
    back = None
    deadline = up + 20
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats["pool_size"] == stats["pool_available"] == 4 and _backends(admin, app) == 4:
            back = time.monotonic()
            break
        sched.sleep(0.01)
    with pool.connection(timeout=1) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    pool.close()
    left = _gone(sched, admin, app)
    admin.close()
    assert first_failure is not None
    return {
        "stopped": stopped,
        "started": started,
        "failed_attempts": failed_attempts,
        "down_for": up - first_failure,
        "back_after": None if back is None else back - up,
        "left": left,
    }


def reconnect_failed(
    sched: Scheduler, dsn: str, *, server: str, stop: list[str], give_up: float = 1.5
) -> dict[str, Any]:
    """The server stays down: ``reconnect_failed`` is called after ``reconnect_timeout``."""
    _patch(sched)
    calls: list[float] = []
    pool = ConnectionPool(
        server,
        min_size=2,
        max_size=2,
        reconnect_timeout=give_up,
        reconnect_failed=lambda _pool: calls.append(time.monotonic()),
    )
    pool.wait(10)
    _run(sched, stop)
    pool.check()
    first_failure = None
    deadline = time.monotonic() + 5
    while first_failure is None and time.monotonic() < deadline:
        if pool.get_stats()["connections_errors"]:
            first_failure = time.monotonic()
        sched.sleep(0.005)
    while not calls and time.monotonic() < deadline + give_up:
        sched.sleep(0.01)
    sched.sleep(0.3)
    stats = pool.get_stats()
    pool.close(timeout=2)
    assert first_failure is not None
    return {
        "calls": [t - first_failure for t in calls],
        "attempts": stats["connections_errors"],
        "size": stats["pool_size"],
    }


def chaos(
    sched: Scheduler, dsn: str, *, events: int = 10_000, max_size: int = 10, seed: int = 13
) -> dict[str, Any]:
    """Kill and time out waiters and holders at random, ``events`` times; then audit the pool."""
    _patch(sched)
    rng = random.Random(seed)
    app = _app("chaos")
    admin = _admin(dsn)
    pool = ConnectionPool(
        dsn, min_size=2, max_size=max_size, kwargs={"application_name": app}, timeout=5
    )
    pool.wait(10)
    count = {"killed": 0, "timed_out": 0, "pool_timeout": 0, "served": 0, "completed": 0}
    errors: list[str] = []
    query_errors = {"n": 0}

    def worker(kind: int, hold: float, bound: float) -> None:
        try:
            if kind < 20:  # a deadline of the scheduler around the whole request
                with sched.timeout(bound), pool.connection(timeout=1) as conn:
                    count["served"] += 1
                    sched.sleep(hold)
            else:
                with pool.connection(timeout=bound if kind < 60 else 1) as conn:
                    count["served"] += 1
                    if kind >= 95:  # a query in flight when the kill comes: the connection closes
                        with conn.cursor() as cur:
                            cur.execute("SELECT pg_sleep(%s)", [hold])
                    elif kind >= 80:  # a transaction open while sleeping: rolled back on return
                        with conn.cursor() as cur:
                            cur.execute("SELECT 1")
                        sched.sleep(hold)
                    else:
                        sched.sleep(hold)
            count["completed"] += 1
        except sched.Kill:
            count["killed"] += 1
            raise
        except sched.Timeout:
            count["timed_out"] += 1
        except PoolTimeout:
            count["pool_timeout"] += 1
        except psycopg2.OperationalError:
            query_errors["n"] += 1  # a query cut short by a scheduler timeout
            count["timed_out"] += 1
        except Exception as exc:
            errors.append(repr(exc))

    def interrupts() -> int:
        return count["killed"] + count["timed_out"] + count["pool_timeout"]

    live: list[Any] = []
    start = time.perf_counter()
    while interrupts() < events:
        while len(live) < 80:
            kind = rng.randrange(100)
            live.append(
                sched.spawn(worker, kind, rng.uniform(0, 0.002), rng.uniform(0.0005, 0.003))
            )
        sched.sleep(rng.uniform(0, 0.0005))
        for task in rng.sample(live, rng.randint(2, 12)):
            sched.kill(task)
        live = [task for task in live if not task.dead]
    for task in live:
        sched.kill(task)
    sched.join(live)
    elapsed = time.perf_counter() - start
    _settle(sched, pool, admin, app)
    stats = pool.get_stats()
    backends = _backends(admin, app)
    in_use = len(pool._out)
    opening = pool._opening
    with pool.connection(timeout=2) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    pool.close()
    left = _gone(sched, admin, app)
    admin.close()
    return {
        **count,
        "interrupts": interrupts(),
        "errors": errors[:5],
        "query_errors": query_errors["n"],
        "elapsed": elapsed,
        "stats": stats,
        "backends": backends,
        "in_use": in_use,
        "opening": opening,
        "left": left,
    }


def misuse(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """Returning a connection twice, to another pool, while another greenlet uses it; a closed pool."""
    _patch(sched)
    out: dict[str, Any] = {}
    one = ConnectionPool(dsn, min_size=1, max_size=2, name="one")
    two = ConnectionPool(dsn, min_size=1, max_size=1, name="two")
    conn = one.getconn()
    one.putconn(conn)
    try:
        one.putconn(conn)
    except PoolMisuseError as exc:
        out["twice"] = str(exc)
    conn = one.getconn()
    try:
        two.putconn(conn)
    except PoolMisuseError as exc:
        out["other"] = str(exc)

    def query() -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(0.3)")

    task = sched.spawn(query)
    sched.sleep(0.05)
    try:
        one.putconn(conn)
    except PoolMisuseError as exc:
        out["busy"] = str(exc)
    sched.join([task])
    one.putconn(conn)  # once the query is done, the return is accepted
    out["stats"] = one.get_stats()
    one.close()
    two.close()
    try:
        one.getconn()
    except psycopg2.OperationalError as exc:
        out["closed"] = [type(exc).__name__, str(exc)]
    return out


def _in_hub(sched: Scheduler, func: Any, *args: Any) -> None:
    """Run ``func(*args)`` in the scheduler's hub (as a finalizer the collector runs there)."""
    if sched.name == "gevent":
        import gevent

        gevent.get_hub().loop.run_callback(func, *args)
    else:
        from eventlet.hubs import get_hub

        get_hub().schedule_call_global(0, func, *args)


def hub(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A connection returned from the hub in a transaction; a request from the hub, none free."""
    _patch(sched)
    import logging

    blocked: list[str] = []  # psycogreen reports an operation that blocked the hub

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "psycogreen":  # core's own reports, not the pool's
                blocked.append(record.getMessage())

    logging.getLogger("psycogreen").addHandler(Record(logging.DEBUG))
    logging.getLogger("psycogreen").setLevel(logging.DEBUG)
    out: dict[str, Any] = {}
    pool = ConnectionPool(dsn, min_size=1, max_size=1)
    pool.wait(10)
    conn = pool.getconn()
    with conn.cursor() as cur:
        cur.execute("SELECT 1")  # a transaction left open: the return must roll it back
    errors: list[str] = []

    def put() -> None:
        try:
            pool.putconn(conn)
        except BaseException as exc:
            errors.append(repr(exc))

    _in_hub(sched, put)
    sched.sleep(0.2)
    out["put_errors"] = errors
    again = pool.getconn(timeout=2)
    out["same"] = again is conn
    out["status"] = again.get_transaction_status()
    refused: list[str] = []

    def get() -> None:
        try:
            pool.getconn(timeout=1)
        except BaseException as exc:
            refused.append(type(exc).__name__)

    _in_hub(sched, get)
    sched.sleep(0.2)
    out["get_from_hub"] = refused
    pool.putconn(again)
    out["stats"] = pool.get_stats()
    out["hub_blocked"] = blocked
    pool.close()
    return out


def freed_first(sched: Scheduler, dsn: str, *, connect_delay: float = 1.0) -> dict[str, Any]:
    """A waiter is served by a connection returned while the pool opens another (a slow connect)."""
    _patch(sched)
    params = psycopg2.extensions.parse_dsn(dsn)
    with Proxy(params["host"], int(params["port"])) as proxy:
        via = f"host=127.0.0.1 port={proxy.port} user={params['user']} dbname={params['dbname']}"
        pool = ConnectionPool(via, min_size=1, max_size=2)
        pool.wait(10)
        proxy.delay(connect_delay)  # from now on connects take that long
        held = pool.getconn()
        got: list[Any] = []

        def want() -> None:
            start = time.perf_counter()
            conn = pool.getconn(timeout=5)
            got.append([conn is held, time.perf_counter() - start])
            pool.putconn(conn)

        task = sched.spawn(want)
        sched.sleep(0.1)  # the request waits, and a connect for it has started
        opening = pool._opening
        pool.putconn(held)
        sched.join([task])
        sched.sleep(connect_delay + 0.5)  # the connect that was started ends, and is kept
        stats = pool.get_stats()
        pool.close()
    return {"got": got, "opening": opening, "stats": stats}
