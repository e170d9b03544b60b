# SPDX-License-Identifier: BSD-3-Clause
"""Scenarios for the hub's own context, late and nested interrupts, and the 1.x install path.

Each runs in a subprocess monkey-patched for one scheduler (``tests/support/green.py``).
"""

from __future__ import annotations

import gc
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions

from tests.support.green import Scheduler, heartbeat
from tests.support.proxy import Proxy
from tests.support.scenarios_interrupt import APP, Watcher, _dsn, _patch, _server


class _Records(logging.Handler):
    """Log records of a logger, kept for the result."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        logger = logging.getLogger(name)
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def exceptions(self) -> list[str]:
        """``Type: message`` of the exceptions the records carry."""
        return [
            f"{type(r.exc_info[1]).__name__}: {r.exc_info[1]}"
            for r in self.records
            if r.exc_info and r.exc_info[1] is not None
        ]


def _in_the_loop(sched: Scheduler, func: Callable[[], None]) -> None:
    """Run ``func`` in the hub's own greenlet (a loop callback), and let the hub run it."""
    if sched.name == "gevent":
        import gevent

        gevent.get_hub().loop.run_callback(func)
    else:
        from eventlet import hubs

        hubs.get_hub().schedule_call_global(0, func)
    sched.sleep(0.05)


def _hub_greenlet(sched: Scheduler) -> object:
    if sched.name == "gevent":
        import gevent

        return gevent.get_hub()
    from eventlet import hubs

    return hubs.get_hub().greenlet


# --- the hub's own context --------------------------------------------------------------------


class _Owner:
    """Rolls its connection back when finalised: a pool's return, run by whoever collects it."""

    def __init__(self, conn: Any, state: dict[str, Any], sched: Scheduler) -> None:
        self.conn = conn
        self.state = state
        self.sched = sched
        self.cycle = self  # only the cyclic collector frees it

    def __del__(self) -> None:
        from greenlet import getcurrent

        self.state["in_hub"] = getcurrent() is _hub_greenlet(self.sched)
        start = time.perf_counter()
        try:
            self.conn.rollback()
        except BaseException as exc:
            self.state["error"] = f"{type(exc).__name__}: {exc}"
        self.state["blocked"] = time.perf_counter() - start


def hub_rollback(sched: Scheduler, dsn: str, how: str = "callback") -> dict[str, Any]:
    """``conn.rollback()`` run by the hub itself: a loop callback, or a finalizer it runs."""
    _patch(sched)
    records = _Records("psycogreen")
    conn = psycopg2.connect(_dsn(dsn))
    cur = conn.cursor()
    cur.execute("CREATE TEMP TABLE t (x int)")
    conn.commit()
    cur.execute("INSERT INTO t VALUES (1)")  # a transaction is open
    state: dict[str, Any] = {}
    with heartbeat(sched, 0.005) as hb:
        if how == "callback":

            def rollback() -> None:
                from greenlet import getcurrent

                state["in_hub"] = getcurrent() is _hub_greenlet(sched)
                start = time.perf_counter()
                try:
                    conn.rollback()
                except BaseException as exc:
                    state["error"] = f"{type(exc).__name__}: {exc}"
                state["blocked"] = time.perf_counter() - start

            _in_the_loop(sched, rollback)
        else:
            gc.disable()  # the collection below is the hub's
            _Owner(conn, state, sched)
            _in_the_loop(sched, lambda: state.update(collected=gc.collect(0)))  # young objects only
            gc.enable()
        sched.sleep(0.05)
    out = {
        **state,
        "closed": conn.closed,
        "status": conn.status,
        "max_gap": max(hb.gaps, default=0.0),
        "warnings": records.messages(),
    }
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM t")
    out["rows_after"] = cur.fetchone()[0]  # 0: the rollback happened
    conn.close()
    return out


def hub_query_deadline(sched: Scheduler, dsn: str, seconds: float = 0.3) -> dict[str, Any]:
    """A slow statement run by the hub itself is bounded by the connection's deadline."""
    from psycogreen import core

    _patch(sched)
    conn = psycopg2.connect(_dsn(dsn))
    core.set_timeout(conn, seconds)
    state: dict[str, Any] = {}

    def slow() -> None:
        start = time.perf_counter()
        try:
            conn.cursor().execute("SELECT pg_sleep(5)")
        except BaseException as exc:
            state["error"] = type(exc).__name__
        state["elapsed"] = time.perf_counter() - start

    _in_the_loop(sched, slow)
    sched.sleep(0.1)
    out = {**state, "closed": conn.closed}
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 5")
    out["after"] = cur.fetchone()[0]
    conn.close()
    return out


def sqlalchemy_collected(
    sched: Scheduler, dsn: str, greenlets: int = 200, checkouts: int = 10_000
) -> dict[str, Any]:
    """SQLAlchemy's pool finalising connections dropped without being returned.

    Every checkout is dropped inside a reference cycle, so only the cyclic collector frees it,
    and the hub runs that collection every few checkouts: ``_finalize_fairy`` then rolls the
    connection back in the hub (gevent#1937).
    """
    import sqlalchemy
    from sqlalchemy import event

    _patch(sched)
    records = _Records("sqlalchemy.pool")
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg2://",
        creator=lambda: psycopg2.connect(_dsn(dsn)),
        pool_size=20,
        max_overflow=0,
        pool_timeout=60,
    )
    counts = {"closed": 0, "invalidated": 0, "done": 0, "hub_collections": 0}

    def on(kind: str) -> Callable[..., None]:
        def count(*_args: object) -> None:
            counts[kind] += 1

        return count

    event.listen(engine.pool, "close", on("closed"))
    event.listen(engine.pool, "invalidate", on("invalidated"))
    per_task = checkouts // greenlets
    gc.disable()

    def collect() -> None:
        counts["hub_collections"] += 1
        # The young generations, where the dropped checkouts are: a full collection every few
        # milliseconds would cost the process more than the queries.
        gc.collect(1)

    def work() -> None:
        for _ in range(per_task):
            raw = engine.raw_connection()
            cur = raw.cursor()
            cur.execute("SELECT 1")
            cur.fetchone()
            cur.close()
            holder: dict[str, Any] = {"raw": raw}
            holder["self"] = holder  # dropped without close(): only the collector frees it
            del raw, holder, cur
            counts["done"] += 1
            sched.sleep(0)

    running = True

    def collector() -> None:  # has the hub collect every few milliseconds
        while running:
            _schedule(sched, collect)
            sched.sleep(0.005)

    with heartbeat(sched, 0.005) as hb:
        collecting = sched.spawn(collector)
        tasks = [sched.spawn(work) for _ in range(greenlets)]
        results = sched.join(tasks)
        running = False
        sched.join([collecting])
        _schedule(sched, collect)
        sched.sleep(0.1)
    gc.enable()
    gc.collect()
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    logged = records.messages(logging.ERROR)
    # gevent's BlockingSwitchOutError, eventlet's "do not call blocking functions from the
    # mainloop" (a RuntimeError): what a rollback run by the hub used to raise.
    blocking = [
        e for e in records.exceptions() if e.startswith(("BlockingSwitchOutError", "RuntimeError"))
    ]
    status = engine.pool.status()
    result = dict(counts)
    engine.dispose()
    return {
        **result,
        "errors": errors[:5],
        "error_count": len(errors),
        "logged_errors": logged[:5],
        "logged_error_count": len(logged),
        "blocking_errors": len(blocking),
        "logged_exceptions": records.exceptions()[:3],
        "max_gap": max(hb.gaps, default=0.0),
        "status": status,
        "leaked": Watcher(sched, dsn).leaked(),
    }


def _schedule(sched: Scheduler, func: Callable[[], None]) -> None:
    if sched.name == "gevent":
        import gevent

        gevent.get_hub().loop.run_callback(func)
    else:
        from eventlet import hubs

        hubs.get_hub().schedule_call_global(0, func)


# --- nested interrupts ------------------------------------------------------------------------


def nested(
    sched: Scheduler, dsn: str, how: str = "two_timeouts", seconds: float = 0.2
) -> dict[str, Any]:
    """Two interrupts that arrive together: the statement is cancelled all the same."""
    from psycogreen import core

    _patch(sched)
    watcher = Watcher(sched, dsn)
    conn = psycopg2.connect(_dsn(dsn))
    pid = conn.get_backend_pid()
    marks: dict[str, Any] = {}

    def victim() -> None:
        cur = conn.cursor()
        try:
            if how == "two_timeouts":
                with sched.timeout(seconds) as outer, sched.timeout(seconds) as inner:
                    marks["timeouts"] = (outer, inner)
                    cur.execute("SELECT pg_sleep(3)")
            elif how == "timeout_deadline":
                with sched.timeout(seconds) as outer, core.timeout(seconds):
                    marks["timeouts"] = (outer,)
                    cur.execute("SELECT pg_sleep(3)")
            else:  # timeout_kill: a worker timeout kills the greenlet while it cancels
                with sched.timeout(seconds) as outer:
                    marks["timeouts"] = (outer,)
                    cur.execute("SELECT pg_sleep(3)")
        except BaseException as exc:
            marks["at"] = time.perf_counter()
            marks["exc"] = exc
            raise

    start = time.perf_counter()
    task = sched.spawn(victim)
    if how == "timeout_kill":
        sched.sleep(seconds + 0.01)
        sched.kill(task)
    sched.join([task])
    exc = marks["exc"]
    state, settled = watcher.settle(pid, marks["at"])
    context = exc.__context__
    timeouts = marks.get("timeouts", ())
    out = {
        "exc": type(exc).__name__,
        "context": type(context).__name__ if context is not None else None,
        "context_is_other_timeout": any(context is t and t is not exc for t in timeouts),
        "raised_after": marks["at"] - start,
        "state": state,
        "settled": settled,
        "closed": conn.closed,
    }
    conn.close()
    out["backend_gone"] = watcher.gone(pid)
    return out


# --- interrupts on a dead network -------------------------------------------------------------


def frozen_interrupt(
    sched: Scheduler, dsn: str, how: str = "timeout", limit: float = 1.0
) -> dict[str, Any]:
    """An interrupt while the server (and so the cancel) is black-holed reaches the caller on time."""
    from psycogreen import core

    _patch(sched)
    core.set_cancel_timeout(2.0)
    watcher = Watcher(sched, dsn)
    out: dict[str, Any] = {}
    with Proxy(*_server(dsn)) as proxy:
        conn = psycopg2.connect(_dsn(dsn, proxy.port))
        pid = conn.get_backend_pid()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        proxy.freeze()
        marks: dict[str, Any] = {}
        # An interrupt's cancel goes on in the background and reaches the server once the
        # network is back (within the cancel timeout), stopping the statement. A deadline's
        # cancel gives up at the bound, before the network is back: its statement is one that
        # only the network holds up, so that the server drops the backend once the closed
        # connection reaches it.
        statement = "SELECT 2" if how == "deadline" else "SELECT pg_sleep(10)"

        def victim() -> None:
            try:
                if how == "timeout":
                    with sched.timeout(limit):
                        cur.execute(statement)
                elif how == "deadline":
                    with core.timeout(limit):
                        cur.execute(statement)
                else:
                    cur.execute(statement)
            except BaseException as exc:
                marks["at"] = time.perf_counter()
                marks["exc"] = type(exc).__name__
                if how == "kill":
                    raise

        with heartbeat(sched, 0.005) as hb:
            start = time.perf_counter()
            task = sched.spawn(victim)
            if how == "kill":
                sched.sleep(limit)
                sched.kill(task)
            sched.join([task])
        out["exc"] = marks.get("exc")
        out["elapsed"] = marks.get("at", 0.0) - start
        out["closed"] = conn.closed
        out["max_gap"] = max(hb.gaps, default=0.0)
        # The cancel goes on in the background, bounded by the cancel timeout; once the network
        # is back, nothing is left running.
        sched.sleep(0.5)
        proxy.thaw()
        out["backend_gone"] = watcher.gone(pid, limit=5.0)
        wait_start = time.perf_counter()
        while proxy.count() and time.perf_counter() - wait_start < 5:
            sched.sleep(0.05)
        out["proxy_upstreams"] = proxy.count()
    out["leaked"] = watcher.leaked()
    return out


# --- the 1.x install path ---------------------------------------------------------------------


def installed_the_1x_way(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """``set_wait_callback(<name>_wait_callback)`` without ``patch_psycopg()``."""
    import importlib

    from psycogreen import core

    backend = importlib.import_module(f"psycogreen.{sched.name}")
    # Where psycogreen-gevent is installed, monkey.patch_all() has patched psycopg2 already
    # (the gevent plugin): start from an unpatched psycopg2, as a 1.x program has it.
    core.unpatch()
    records = _Records("psycogreen")
    callback = getattr(backend, f"{sched.name}_wait_callback")
    psycopg2.extensions.set_wait_callback(callback)
    out: dict[str, Any] = {"is_patched": core.is_patched()}
    first = psycopg2.connect(_dsn(dsn))
    out["first_guarded"] = isinstance(first, core.GuardedConnection)
    second = psycopg2.connect(_dsn(dsn))
    out["second_guarded"] = isinstance(second, core.GuardedConnection)
    cur = second.cursor()
    cur.execute("CREATE TEMP TABLE t (x int)")
    cur.copy_expert("COPY t FROM STDIN", io.BytesIO(b"1\n2\n3\n"))
    cur.execute("SELECT count(*) FROM t")
    out["copied"] = cur.fetchone()[0]
    second.commit()
    # A second greenlet's commit() while the first one's query runs: refused, not frozen.
    busy: dict[str, Any] = {}

    def sleeper() -> None:
        second.cursor().execute("SELECT pg_sleep(0.3)")

    task = sched.spawn(sleeper)
    sched.sleep(0.05)
    try:
        second.commit()
    except core.ConnectionBusyError:
        busy["refused"] = True
    sched.join([task])
    out["busy_refused"] = busy.get("refused", False)
    third = psycopg2.connect(_dsn(dsn))
    warnings = records.messages()
    out["warnings"] = warnings
    for conn in (first, second, third):
        conn.close()
    return out


__all__ = [
    "APP",
    "frozen_interrupt",
    "hub_query_deadline",
    "hub_rollback",
    "installed_the_1x_way",
    "nested",
    "sqlalchemy_collected",
]


def kill_during_own_timeout(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A kill lands while the greenlet's own Timeout is about to expire, the network frozen.

    The kill's cancel request cannot be sent at once, so its grace is under way when the
    Timeout expires; the greenlet catches its Timeouts and retries, as retrying code does.
    The kill must still end it.
    """
    _patch(sched)
    out: dict[str, Any] = {"attempts": []}
    with Proxy(*_server(dsn)) as proxy:
        conn = psycopg2.connect(_dsn(dsn, proxy.port))
        conn.cursor().execute("SELECT 1")
        proxy.freeze()

        def retrying() -> None:
            while len(out["attempts"]) < 20:
                try:
                    with sched.timeout(0.3):
                        conn.cursor().execute("SELECT pg_sleep(5)")
                except sched.Timeout as exc:
                    out["attempts"].append(f"Timeout, context {type(exc.__context__).__name__}")
                except BaseException as exc:
                    out["attempts"].append(type(exc).__name__)
                    raise

        task = sched.spawn(retrying)
        sched.sleep(0.28)
        start = time.perf_counter()
        sched.kill(task)
        out["kill_returned_after"] = time.perf_counter() - start
        sched.sleep(0.2)
        out["dead"] = bool(task.dead)
        proxy.thaw()
    return out
