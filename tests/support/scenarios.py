# SPDX-License-Identifier: BSD-3-Clause
"""Scenarios run inside a monkey-patched subprocess (see ``green.py``).

Each takes the scheduler adapter, the DSN and keyword arguments, and returns JSON-able facts
for the test to assert on. The scenarios patch psycopg2 through the backend under test.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tests.support.green import Scheduler, heartbeat


def _patch(sched: Scheduler) -> Any:
    backend = importlib.import_module(f"psycogreen.{sched.name}")
    backend.patch_psycopg()
    return backend


def concurrent_sleep(
    sched: Scheduler, dsn: str, n: int = 20, seconds: float = 0.3
) -> dict[str, Any]:
    _patch(sched)
    conns = [psycopg2.connect(dsn) for _ in range(n)]

    def query(conn: Any) -> int:
        cur = conn.cursor()
        cur.execute("SELECT pg_sleep(%s), pg_backend_pid()", (seconds,))
        return int(cur.fetchone()[1])

    with heartbeat(sched) as hb:
        start = time.perf_counter()
        pids = sched.join([sched.spawn(query, c) for c in conns])
        wall = time.perf_counter() - start
    return {"wall": wall, "pids": len(set(pids)), "max_gap": max(hb.gaps, default=0.0)}


def connect_many(sched: Scheduler, dsn: str, n: int = 20) -> dict[str, Any]:
    _patch(sched)

    def connect() -> int:
        conn = psycopg2.connect(dsn)
        try:
            return int(conn.get_backend_pid())
        finally:
            conn.close()

    start = time.perf_counter()
    pids = sched.join([sched.spawn(connect) for _ in range(n)])
    return {"wall": time.perf_counter() - start, "pids": len(set(pids))}


def server_errors(sched: Scheduler, dsn: str) -> dict[str, Any]:
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}
    for sql in ("SELECT 1/0", "SELECT * FROM no_such_table", "SELECT 'x'::int"):
        try:
            cur.execute(sql)
        except psycopg2.Error as exc:
            out[sql] = [type(exc).__name__, exc.pgcode, conn.closed]
        conn.rollback()
    # a RAISE from the server with a chosen SQLSTATE, then the connection still works
    try:
        cur.execute("DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END $$")
    except psycopg2.Error as exc:
        out["raise"] = [type(exc).__name__, exc.pgcode, str(exc.diag.message_primary)]
    conn.rollback()
    cur.execute("SELECT 42")
    out["after"] = cur.fetchone()[0]
    try:
        psycopg2.connect(dsn + " dbname=no_such_database")
    except psycopg2.OperationalError as exc:
        out["bad_db"] = str(exc)
    return out


def large_result(sched: Scheduler, dsn: str, rows: int = 100_000) -> dict[str, Any]:
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    with heartbeat(sched) as hb:
        cur.execute("SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
        data = cur.fetchall()
    return {
        "rows": len(data),
        "sum": sum(r[0] for r in data),
        "last": data[-1][1],
        "max_gap": max(hb.gaps, default=0.0),
    }


def large_param(sched: Scheduler, dsn: str, size: int = 16 * 1024 * 1024) -> dict[str, Any]:
    _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    cur.execute("SELECT length(%s), md5(%s)", (payload, payload))
    length, digest = cur.fetchone()
    return {"length": length, "md5_ok": digest == hashlib.md5(payload).hexdigest()}


def named_cursors(sched: Scheduler, dsn: str, rows: int = 5000) -> dict[str, Any]:
    _patch(sched)

    def scan(tag: str) -> list[Any]:
        conn = psycopg2.connect(dsn)
        cur = conn.cursor(name=f"scan_{tag}")
        cur.itersize = 100
        cur.execute("SELECT g FROM generate_series(1, %s) g", (rows,))
        seen = []
        for (value,) in cur:
            seen.append(value)
            if value % 500 == 0:
                sched.sleep(0)
        conn.close()
        return [len(seen), sum(seen)]

    order: list[str] = []

    def ticker() -> None:
        for _ in range(20):
            order.append("tick")
            sched.sleep(0.001)

    tasks = [sched.spawn(scan, "a"), sched.spawn(scan, "b"), sched.spawn(ticker)]
    results = sched.join(tasks)
    return {"a": results[0], "b": results[1], "ticks": len(order)}


def listen_notify(sched: Scheduler, dsn: str) -> dict[str, Any]:
    _patch(sched)
    listener = psycopg2.connect(dsn)
    listener.autocommit = True
    listener.cursor().execute("LISTEN psycogreen_test")
    received: list[tuple[str, float]] = []

    def listen() -> None:
        while len(received) < 3:
            sched.wait_read(listener.fileno(), 5)
            listener.poll()
            while listener.notifies:
                note = listener.notifies.pop(0)
                received.append((note.payload, time.perf_counter()))

    sent: list[float] = []

    def notify() -> None:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cur = conn.cursor()
        for i in range(3):
            sched.sleep(0.05)
            sent.append(time.perf_counter())
            cur.execute("SELECT pg_notify('psycogreen_test', %s)", (str(i),))

    sched.join([sched.spawn(listen), sched.spawn(notify)])
    delays = [r[1] - s for r, s in zip(received, sent, strict=True)]
    return {"payloads": [r[0] for r in received], "max_delay": max(delays)}


def registry(sched: Scheduler, dsn: str) -> dict[str, Any]:
    import psycogreen.core as core

    backend = importlib.import_module(f"psycogreen.{sched.name}")
    out: dict[str, Any] = {"initial": repr(psycopg2.extensions.get_wait_callback())}
    backend.patch_psycopg()
    first = psycopg2.extensions.get_wait_callback()
    backend.patch_psycopg()
    out["idempotent"] = psycopg2.extensions.get_wait_callback() is first
    out["is_patched"] = core.is_patched()
    out["scheduler"] = core.current_scheduler()
    out["callback_name"] = first.__name__
    try:
        core.patch_psycopg("blocking")
    except core.PatchConflictError as exc:
        out["conflict"] = str(exc)
    out["unpatch"] = core.unpatch()
    out["after_unpatch"] = psycopg2.extensions.get_wait_callback() is None
    out["unpatch_again"] = core.unpatch()
    out["auto"] = core.patch_psycopg()
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT 1")
    out["query"] = cur.fetchone()[0]
    return out


def query_timeout(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """psycogreen's own deadline: cancelled on the server, connection kept."""
    import functools

    import psycogreen.core as core

    backend = _patch(sched)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    with core.timeout(0.2):
        try:
            cur.execute("SELECT pg_sleep(5)")
        except psycopg2.errors.QueryCanceled as exc:
            out["error"] = type(exc).__name__
    out["elapsed"] = time.perf_counter() - start
    out["closed"] = conn.closed
    conn.rollback()
    cur.execute("SELECT 7")
    out["after"] = cur.fetchone()[0]
    # the 1.x name with a bound timeout
    callback = getattr(backend, f"{sched.name}_wait_callback")
    psycopg2.extensions.set_wait_callback(functools.partial(callback, timeout=0.2))
    start = time.perf_counter()
    try:
        cur.execute("SELECT pg_sleep(5)")
    except psycopg2.errors.QueryCanceled:
        out["partial_elapsed"] = time.perf_counter() - start
    conn.rollback()
    cur.execute("SELECT 8")
    out["partial_after"] = cur.fetchone()[0]
    return out


def interrupted(sched: Scheduler, dsn: str, how: str = "timeout") -> dict[str, Any]:
    """An interrupt during a query: propagates unchanged, statement cancelled on the server."""
    _patch(sched)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    wcur = watcher.cursor()
    conn = psycopg2.connect(dsn)
    pid = conn.get_backend_pid()
    out: dict[str, Any] = {}

    def victim() -> str:
        cur = conn.cursor()
        try:
            if how == "timeout":
                with sched.timeout(0.1):
                    cur.execute("SELECT pg_sleep(5)")
            else:
                cur.execute("SELECT pg_sleep(5)")
        except sched.Timeout:
            return "Timeout"
        return "finished"

    task = sched.spawn(victim)
    if how == "kill":
        sched.sleep(0.1)
        sched.kill(task)
    result = sched.join([task])[0]
    interrupted_at = time.perf_counter()
    out["result"] = type(result).__name__ if isinstance(result, BaseException) else result
    out["closed"] = conn.closed
    # poll the server until the backend is idle or gone
    state = "active"
    while time.perf_counter() - interrupted_at < 3:
        wcur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = wcur.fetchone()
        state = row[0] if row else "gone"
        if state != "active":
            break
        sched.sleep(0.005)
    out["server_state"] = state
    out["settle"] = time.perf_counter() - interrupted_at
    return out


def legacy_replaced(sched: Scheduler, dsn: str, legacy: str) -> dict[str, Any]:
    """psycogreen 1.0.2's callback for the same scheduler is replaced, not refused."""
    import psycogreen.core as core
    from tests.support.legacy import load_legacy

    old = load_legacy(sched.name, legacy)
    old.patch_psycopg()
    installed = psycopg2.extensions.get_wait_callback()
    out: dict[str, Any] = {"legacy_module": installed.__module__, "before": core.is_patched()}
    _patch(sched)
    out["after"] = core.current_scheduler()
    out["replaced"] = psycopg2.extensions.get_wait_callback() is not installed
    return out
