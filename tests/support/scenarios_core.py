# SPDX-License-Identifier: BSD-3-Clause
"""Scenarios for core's scheduler-free callback and registry, run in an unpatched subprocess."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

import psycogreen.core as core
from tests.support.green import Scheduler, ctrl_c_after


def blocking_queries(sched: Scheduler, dsn: str) -> dict[str, Any]:
    out: dict[str, Any] = {"patched": core.patch_psycopg()}
    out["scheduler"] = core.current_scheduler()
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT g FROM generate_series(1, 50000) g")
    out["rows"] = len(cur.fetchall())
    payload = "x" * (8 * 1024 * 1024)
    cur.execute("SELECT length(%s)", (payload,))
    out["param"] = cur.fetchone()[0]
    try:
        cur.execute("SELECT 1/0")
    except psycopg2.errors.DivisionByZero:
        out["error"] = "DivisionByZero"
    conn.rollback()
    with core.timeout(0.2):
        start = time.perf_counter()
        try:
            cur.execute("SELECT pg_sleep(5)")
        except psycopg2.errors.QueryCanceled:
            out["timeout"] = time.perf_counter() - start
    conn.rollback()
    cur.execute("SELECT 3")
    out["after_timeout"] = cur.fetchone()[0]
    return out


def blocking_sigint(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A real SIGINT (Ctrl-C) during a query cancels it on the server and keeps the connection."""
    core.patch_psycopg("blocking")
    conn = psycopg2.connect(dsn)
    pid = conn.get_backend_pid()
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    cur = conn.cursor()
    ctrl_c_after(0.2)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        cur.execute("SELECT pg_sleep(5)")
    except psycopg2.errors.QueryCanceled as exc:
        out["error"] = type(exc).__name__
    out["elapsed"] = time.perf_counter() - start
    out["closed"] = conn.closed
    wcur = watcher.cursor()
    wcur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
    out["server_state"] = wcur.fetchone()[0]
    conn.rollback()
    cur.execute("SELECT 5")
    out["after"] = cur.fetchone()[0]
    return out


def many_fds(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """poll(2), not select(): connections on fds above 1023 work."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    core.patch_psycopg("blocking")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT pg_sleep(0.05), 9")
    out = {"fileno": conn.fileno(), "value": cur.fetchone()[1]}
    for fd in filler:
        os.close(fd)
    return out


def foreign_callbacks(sched: Scheduler, dsn: str, legacy: str) -> dict[str, Any]:
    """What patching does over callbacks other code installed."""
    from psycopg2.extras import wait_select

    from tests.support.legacy import load_legacy

    ext = psycopg2.extensions
    out: dict[str, Any] = {}
    ext.set_wait_callback(wait_select)
    try:
        core.patch_psycopg("blocking")
    except core.PatchConflictError as exc:
        out["foreign"] = str(exc)
    out["kept"] = ext.get_wait_callback() is wait_select
    core.patch_psycopg("blocking", force=True)
    out["forced"] = core.current_scheduler()
    out["unpatch"] = core.unpatch()
    ext.set_wait_callback(wait_select)
    out["unpatch_foreign"] = core.unpatch()
    out["foreign_left"] = ext.get_wait_callback() is wait_select
    # psycogreen 1.0.2's callback is an equivalent for its scheduler, a conflict for "blocking"
    if legacy:
        old = load_legacy(sched.name, legacy)
        ext.set_wait_callback(getattr(old, f"{sched.name}_wait_callback"))
        try:
            core.patch_psycopg("blocking")
        except core.PatchConflictError as exc:
            out["legacy_conflict"] = str(exc)
    return out


def blocking_cancel_from_a_thread(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """conn.cancel() from another thread under the scheduler-free callback: core's request,
    waited for with poll(2) (the GIL released), cancels the query; without any callback,
    psycopg2's own cancel() runs."""
    import threading

    from psycogreen.core import _cancel

    sent: list[bool] = []
    request = _cancel.cancel

    def counting(*args: Any) -> bool:
        sent.append(request(*args))
        return sent[-1]

    _cancel.cancel = counting  # which cancel ran: core's request, or psycopg2's PQcancel()
    core.patch_psycopg("blocking")
    conn = psycopg2.connect(dsn)
    out: dict[str, Any] = {"class": type(conn).__name__}

    def query() -> None:
        try:
            conn.cursor().execute("SELECT pg_sleep(5)")
        except psycopg2.Error as exc:
            out["error"] = type(exc).__name__
        out["at"] = time.perf_counter()

    thread = threading.Thread(target=query)
    thread.start()
    time.sleep(0.2)
    start = time.perf_counter()
    conn.cancel()
    thread.join()
    out["delay"] = out["at"] - start
    out["closed"] = conn.closed
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 6")
    out["after"] = cur.fetchone()[0]
    conn.cancel()  # idle: the server ignores it
    out["core_requests"] = list(sent)
    core.unpatch()
    conn.cancel()  # no callback any more: psycopg2's own
    out["core_requests_unpatched"] = len(sent)
    cur.execute("SELECT 8")
    out["unpatched"] = cur.fetchone()[0]
    conn.close()
    return out


def _freeze_when_active(dsn: str, pid: int, proxy: Any, out: dict[str, Any]) -> None:
    """Freeze ``proxy`` once the backend ``pid`` runs a statement; note when in ``out``."""
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    cur = watcher.cursor()
    for _ in range(500):
        cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        if cur.fetchone() == ("active",):
            break
        time.sleep(0.002)
    proxy.freeze()
    out["frozen_at"] = time.perf_counter()
    watcher.close()


def blocking_sigint_frozen(sched: Scheduler, dsn: str, after: float = 1.0) -> dict[str, Any]:
    """Ctrl-C while the server, and so the cancel request, is black-holed (a frozen proxy).

    The interrupt reaches the program on time; the cancel request goes on in a thread of its
    own, bounded by the cancel timeout, and reaches the server once the network is back.
    """
    from tests.support.proxy import Proxy

    core.patch_psycopg("blocking")
    params = psycopg2.extensions.parse_dsn(dsn)
    out: dict[str, Any] = {}
    with Proxy(params.get("host", "127.0.0.1"), int(params["port"])) as proxy:
        conn = psycopg2.connect(f"{dsn} host=127.0.0.1 port={proxy.port}")
        pid = conn.get_backend_pid()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        start = time.perf_counter()
        ctrl_c_after(after)
        # The network freezes once the statement runs: frozen before, the statement and the
        # cancel request would race through the proxy when it thaws.
        freezer = threading.Thread(target=_freeze_when_active, args=(dsn, pid, proxy, out))
        freezer.start()
        try:
            cur.execute("SELECT pg_sleep(10)")
        except KeyboardInterrupt:
            out["error"] = "KeyboardInterrupt"
        out["elapsed"] = time.perf_counter() - start
        freezer.join()
        out["frozen_at"] -= start
        out["closed"] = conn.closed
        time.sleep(0.3)
        proxy.thaw()
        watcher = psycopg2.connect(dsn)
        watcher.autocommit = True
        wcur = watcher.cursor()
        deadline = time.perf_counter() + 5
        state: str | None = "active"
        while time.perf_counter() < deadline:
            wcur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = wcur.fetchone()
            state = None if row is None else row[0]
            if state != "active":
                break
            time.sleep(0.02)
        out["server_state"] = state
        watcher.close()
    return out
