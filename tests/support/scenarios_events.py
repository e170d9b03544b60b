# SPDX-License-Identifier: BSD-3-Clause
"""Scenarios for psycogreen's events: each makes one kind of event happen and returns the records.

Each runs in a subprocess monkey-patched for one scheduler (``tests/support/green.py``).
Records come back as dicts (``dataclasses.asdict``) with their ``kind``.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from typing import Any

import psycopg2
import psycopg2.extensions

from tests.support.green import Scheduler, ctrl_c_after
from tests.support.proxy import Proxy
from tests.support.scenarios_copy import GeneratorSource, SlowSink, _rows
from tests.support.scenarios_interrupt import APP, Watcher, _dsn, _patch, _server
from tests.support.scenarios_reliability import _in_the_loop, _Records


class Recorder:
    """A subscriber that keeps every record, with when it arrived."""

    def __init__(self) -> None:
        self.records: list[tuple[float, Any]] = []

    def __call__(self, record: Any) -> None:
        self.records.append((time.perf_counter(), record))

    def dicts(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            {"kind": r.kind, "at": at - since, **dataclasses.asdict(r)} for at, r in self.records
        ]

    def kinds(self) -> list[str]:
        return [r.kind for _, r in self.records]


def _subscribe(**kw: Any) -> Recorder:
    from psycogreen.core import events

    recorder = Recorder()
    events.subscribe(recorder, **kw)
    return recorder


def _callback_name() -> str:
    callback = psycopg2.extensions.get_wait_callback()
    func = getattr(callback, "func", callback)
    return f"{func.__module__}.{func.__qualname__}"


# --- cancels and deadlines --------------------------------------------------------------------


def cancelled(sched: Scheduler, dsn: str, how: str = "deadline") -> dict[str, Any]:
    """A ``pg_sleep(5)`` stopped ``how``: a deadline, a Timeout, a kill, Ctrl-C."""
    from psycogreen import core

    _patch(sched)
    recorder = _subscribe()
    conn = psycopg2.connect(_dsn(dsn))
    pid = conn.get_backend_pid()
    params = psycopg2.extensions.parse_dsn(dsn)
    out: dict[str, Any] = {"pid": pid, "host": params.get("host"), "port": params.get("port")}

    def victim() -> None:
        cur = conn.cursor()
        try:
            if how == "deadline":
                with core.timeout(0.2):
                    cur.execute("SELECT pg_sleep(5)")
            elif how == "timeout":
                with sched.timeout(0.2):
                    cur.execute("SELECT pg_sleep(5)")
            elif how == "ctrl-c":
                ctrl_c_after(0.2)
                cur.execute("SELECT pg_sleep(5)")
            else:
                cur.execute("SELECT pg_sleep(5)")
        except BaseException as exc:
            out["exc"] = type(exc).__name__
            if how == "kill":
                raise

    start = time.perf_counter()
    if how == "ctrl-c":
        victim()  # the main greenlet: where Python raises KeyboardInterrupt
    else:
        task = sched.spawn(victim)
        if how == "kill":
            sched.sleep(0.2)
            sched.kill(task)
        sched.join([task])
    sched.sleep(0.1)
    out["closed"] = conn.closed
    out["records"] = recorder.dicts(start)
    conn.close()
    return out


def frozen_cancel(sched: Scheduler, dsn: str, how: str = "timeout") -> dict[str, Any]:
    """Cancels a black-holed server cannot take at once.

    ``timeout``: a Timeout's cancel goes on in the background and reaches the server once the
    network is back (a follow-up record). ``deadline``: a deadline's cancel gives up at the
    cancel timeout (0.5 s here) and the connection is closed.
    """
    from psycogreen import core

    _patch(sched)
    core.set_cancel_timeout(0.5 if how == "deadline" else 2.0)
    watcher = Watcher(sched, dsn)
    out: dict[str, Any] = {}
    with Proxy(*_server(dsn)) as proxy:
        conn = psycopg2.connect(_dsn(dsn, proxy.port))
        pid = conn.get_backend_pid()
        cur = conn.cursor()
        cur.execute("SELECT 1")
        recorder = _subscribe()
        proxy.freeze()
        start = time.perf_counter()
        try:
            if how == "deadline":
                with core.timeout(0.3):
                    cur.execute("SELECT 2")
            else:
                with sched.timeout(0.3):
                    cur.execute("SELECT pg_sleep(10)")
        except BaseException as exc:
            out["exc"] = type(exc).__name__
        out["raised_after"] = time.perf_counter() - start
        sched.sleep(0.3)
        proxy.thaw()
        out["backend_gone"] = watcher.gone(pid, limit=5.0)
        sched.sleep(0.2)
        out["records"] = recorder.dicts(start)
    out["pid"] = pid
    out["proxy_port"] = proxy.port
    out["leaked"] = watcher.leaked()
    return out


# --- connect attempts -------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failover(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """Three hosts: refused, black-holed (``connect_timeout=2``), then the server."""
    _patch(sched)
    host, port = _server(dsn)
    params = psycopg2.extensions.parse_dsn(dsn)
    refused = _closed_port()
    with Proxy(host, port) as proxy:
        proxy.freeze()
        recorder = _subscribe()
        target = psycopg2.extensions.make_dsn(
            user=params.get("user", "postgres"),
            dbname=params.get("dbname", "postgres"),
            host=f"127.0.0.1,127.0.0.1,{host}",
            port=f"{refused},{proxy.port},{port}",
            connect_timeout=2,
            application_name=APP,
        )
        start = time.perf_counter()
        conn = psycopg2.connect(target)
        elapsed = time.perf_counter() - start
        pid = conn.get_backend_pid()
        conn.close()
        out = {
            "elapsed": elapsed,
            "pid": pid,
            "ports": [refused, proxy.port, port],
            "records": recorder.dicts(start),
        }
    return out


def connect_deadline(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A connect to a black-holed server under ``timeout(0.3)``: the deadline, then the attempt."""
    from psycogreen import core

    _patch(sched)
    out: dict[str, Any] = {}
    with Proxy(*_server(dsn)) as proxy:
        proxy.freeze()
        recorder = _subscribe()
        start = time.perf_counter()
        try:
            with core.timeout(0.3):
                psycopg2.connect(_dsn(dsn, proxy.port))
        except psycopg2.OperationalError as exc:
            out["exc"] = type(exc).__name__
        out["records"] = recorder.dicts(start)
        out["proxy_port"] = proxy.port
    return out


# --- the hub's own context --------------------------------------------------------------------


def hub_blocked(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A rollback run by the hub itself (a loop callback)."""
    _patch(sched)
    recorder = _subscribe()
    conn = psycopg2.connect(_dsn(dsn))
    pid = conn.get_backend_pid()
    conn.cursor().execute("SELECT 1")  # a transaction is open
    state: dict[str, Any] = {}

    def rollback() -> None:
        start = time.perf_counter()
        conn.rollback()
        state["blocked"] = time.perf_counter() - start

    _in_the_loop(sched, rollback)
    sched.sleep(0.05)
    conn.close()
    return {**state, "pid": pid, "records": recorder.dicts()}


# --- COPY ---------------------------------------------------------------------------------------


def copy_interrupted(sched: Scheduler, dsn: str, direction: str, how: str) -> dict[str, Any]:
    """A COPY FROM (endless source) or TO (slow sink) stopped by a Timeout or a deadline."""
    from psycogreen import core

    _patch(sched)
    conn = psycopg2.connect(_dsn(dsn))
    conn.autocommit = True
    pid = conn.get_backend_pid()
    cur = conn.cursor()
    cur.execute("CREATE TEMP TABLE t (a int, b text, c float8)")
    if direction == "out":
        cur.execute("INSERT INTO t SELECT g, 'x', g FROM generate_series(1, 200000) g")
    recorder = _subscribe()
    out: dict[str, Any] = {"pid": pid}

    def run() -> None:
        if direction == "in":
            cur.copy_from(GeneratorSource(_rows(10_000_000)), "t")
        else:
            cur.copy_expert("COPY t TO STDOUT", SlowSink(sched))

    start = time.perf_counter()
    try:
        if how == "deadline":
            with core.timeout(0.3):
                run()
        else:
            with sched.timeout(0.3):
                run()
    except BaseException as exc:
        out["exc"] = type(exc).__name__
    out["closed"] = conn.closed
    out["records"] = recorder.dicts(start)
    if not conn.closed:
        cur.execute("SELECT 42")
        out["after"] = cur.fetchone()[0]
    conn.close()
    return out


# --- per-wait timing ----------------------------------------------------------------------------


def waits(sched: Scheduler, dsn: str, sample: int = 1, queries: int = 20) -> dict[str, Any]:
    """Per-wait timing on and off: the callback installed, the records, the callback after."""
    import functools

    from psycogreen import core
    from psycogreen.core import events

    _patch(sched)
    out: dict[str, Any] = {"normal": _callback_name()}
    plain = _subscribe()  # an ordinary subscriber: the normal callback stays
    out["with_plain_subscriber"] = _callback_name()
    events.set_wait_sampling(sample)
    timed = _subscribe(waits=True)
    out["with_wait_subscriber"] = _callback_name()
    out["is_patched"] = core.is_patched()
    out["scheduler"] = core.current_scheduler()
    state: dict[str, Any] = {}

    def work() -> None:  # in a task, as application code runs
        state["conn"] = conn = psycopg2.connect(_dsn(dsn))
        cur = conn.cursor()
        cur.execute("SELECT pg_sleep(0.05)")
        for _ in range(queries):
            cur.execute("SELECT 1")
        conn.commit()

    sched.join([sched.spawn(work)])
    conn = state["conn"]
    pid = conn.get_backend_pid()
    cur = conn.cursor()
    events.unsubscribe(timed)
    out["after_unsubscribe"] = _callback_name()
    cur.execute("SELECT 1")  # not timed any more
    # A partial callback (a timeout bound to it) keeps its arguments across the switch.
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(functools.partial(callback, timeout=30.0))
    events.subscribe(timed, waits=True)
    bound = psycopg2.extensions.get_wait_callback()
    out["partial_kept"] = isinstance(bound, functools.partial) and bound.keywords == {
        "timeout": 30.0
    }
    out["partial_timed"] = _callback_name()
    events.unsubscribe(timed)
    psycopg2.extensions.set_wait_callback(callback)
    conn.close()
    out["pid"] = pid
    out["records"] = timed.dicts()
    out["plain_kinds"] = plain.kinds()
    return out


# --- subscribers that fail, the logging adapter ----------------------------------------------


def failing_subscriber(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """A subscriber that raises: the operation is unchanged, the failure logged once."""
    from psycogreen import core
    from psycogreen.core import events

    _patch(sched)
    logged = _Records("psycogreen")

    def broken(record: Any) -> None:
        raise RuntimeError(record.kind)

    events.subscribe(broken)
    recorder = _subscribe()
    conn = psycopg2.connect(_dsn(dsn))
    results = []
    for _ in range(2):
        try:
            with core.timeout(0.1):
                conn.cursor().execute("SELECT pg_sleep(5)")
        except psycopg2.Error as exc:
            results.append(type(exc).__name__)
        conn.rollback()
    conn.close()
    return {
        "results": results,
        "errors_logged": len(logged.messages(logging.ERROR)),
        "kinds": recorder.kinds(),
    }


def logged(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """``log_events()``: a line per event on the ``psycogreen`` logger, none once unsubscribed."""
    from psycogreen import core
    from psycogreen.core import events

    _patch(sched)
    records = _Records("psycogreen")
    conn = psycopg2.connect(_dsn(dsn))

    def stopped() -> None:
        try:
            with core.timeout(0.1):
                conn.cursor().execute("SELECT pg_sleep(5)")
        except psycopg2.Error:
            conn.rollback()

    stopped()  # nobody listens: nothing logged
    before = [r.getMessage() for r in records.records]
    subscriber = events.log_events(logging.INFO)
    stopped()
    during = [r.getMessage() for r in records.records]
    extra = [type(getattr(r, "psycogreen_event", None)).__name__ for r in records.records]
    events.unsubscribe(subscriber)
    stopped()
    after = [r.getMessage() for r in records.records]
    conn.close()
    return {"before": before, "during": during, "after": after, "extra": extra}


# --- the adapters, with the real libraries ----------------------------------------------------


def _stopped_queries(sched: Scheduler, dsn: str) -> int:
    """A deadline and a Timeout, each stopping a statement; return the backend pid."""
    from psycogreen import core

    conn = psycopg2.connect(_dsn(dsn))
    pid = conn.get_backend_pid()
    cur = conn.cursor()
    try:
        with core.timeout(0.1):
            cur.execute("SELECT pg_sleep(5)")
    except psycopg2.Error:
        conn.rollback()
    try:
        with sched.timeout(0.1):
            cur.execute("SELECT pg_sleep(5)")
    except sched.Timeout:
        pass
    conn.close()
    return int(pid)


def prometheus(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """The Prometheus adapter on a registry of its own: counters and histograms by kind."""
    from prometheus_client import CollectorRegistry, generate_latest

    from psycogreen.core.prometheus import PrometheusEvents

    _patch(sched)
    registry = CollectorRegistry()
    metrics = PrometheusEvents(registry=registry, waits=True)
    _stopped_queries(sched, dsn)
    metrics.close()
    text = generate_latest(registry).decode()
    samples = {}
    for family in registry.collect():
        for sample in family.samples:
            key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return {"samples": samples, "text": text}


def opentelemetry(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """The OpenTelemetry adapter: span events on the span current where the event happens."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from psycogreen.core.otel import SpanEvents

    _patch(sched)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    adapter = SpanEvents()
    with tracer.start_as_current_span("request"):
        pid = _stopped_queries(sched, dsn)
    adapter.close()
    with tracer.start_as_current_span("after"):
        _stopped_queries(sched, dsn)
    spans = [
        {
            "name": span.name,
            "events": [
                {"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events
            ],
        }
        for span in exporter.get_finished_spans()
    ]
    return {"pid": pid, "spans": spans}


__all__ = [
    "blocked_hub",
    "cancelled",
    "connect_deadline",
    "copy_interrupted",
    "failing_subscriber",
    "failover",
    "frozen_cancel",
    "hub_blocked",
    "logged",
    "opentelemetry",
    "prometheus",
    "waits",
]


# --- who blocked the hub (gevent's monitor thread) --------------------------------------------


def blocked_hub(
    sched: Scheduler, dsn: str, how: str = "not_patched", watch: str = "plugin"
) -> dict[str, Any]:
    """A query that blocks gevent's hub while its monitor thread runs (``max_blocking_time``).

    The environment enables the monitor (``GEVENT_MONITOR_THREAD_ENABLE=1``,
    ``GEVENT_MAX_BLOCKING_TIME``). gevent reports a block at the second of its checks after the
    last switch, so between one and two periods after the block began, depending on where in
    the period it began. The query is started just before a check (synchronised on a monitoring
    function of the monitor thread itself), so that gevent reports it one period in; what is
    measured is when psycogreen's warning comes, from the start of the query.

    ``how``: ``not_patched`` (the plugin off, ``PSYCOGREEN_GEVENT_AUTOPATCH=0``), ``connect``
    (an unpatched connect to a server that answers after 0.6 s), ``foreign`` (a callback of
    other code that blocks), ``psycopg3`` (psycopg 3 with its C wait, ``PSYCOPG_WAIT_FUNC``),
    ``patched`` (the control: nothing to report).
    ``watch``: ``plugin`` (the monkey plugin installed the watcher in ``patch_all()``) or
    ``call`` (``psycogreen.gevent.watch_blocking()``).
    """
    import os

    import gevent
    import gevent.events
    from gevent.socket import wait_read

    import psycogreen.gevent
    from psycogreen.gevent import _monitor

    watching = _monitor.watching()
    if watch == "call":
        psycogreen.gevent.watch_blocking()
    records = _Records("psycogreen")
    recorder = _subscribe()
    if how == "patched":
        _patch(sched)
    elif how == "foreign":
        from gevent.monkey import get_original

        real_select = get_original("select", "select")

        def blocking_wait(conn: Any) -> None:  # waits without ever yielding to the hub
            while conn.poll() != psycopg2.extensions.POLL_OK:
                real_select([conn.fileno()], [], [], 5.0)

        psycopg2.extensions.set_wait_callback(blocking_wait)
    proxy = Proxy(*_server(dsn)) if how == "connect" else None
    if how == "psycopg3":
        import psycopg

        conn: Any = psycopg.connect(_dsn(dsn), autocommit=True)
        pid = conn.info.backend_pid
        cur: Any = conn
    elif proxy is None:
        conn = psycopg2.connect(_dsn(dsn))
        pid = conn.get_backend_pid()
        cur = conn.cursor()
    reports: list[float] = []

    def on_gevent_event(event: object) -> None:
        if isinstance(event, gevent.events.EventLoopBlocked):
            reports.append(time.time())

    gevent.events.subscribers.append(on_gevent_event)
    gevent.sleep(0.01)  # the hub runs: its monitor thread starts
    monitor = gevent.get_hub().periodic_monitoring_thread
    period = float(gevent.config.max_blocking_time)
    read_end, write_end = os.pipe()
    monitor.add_monitoring_function(lambda _hub: os.write(write_end, b"."), period)
    wait_read(read_end)  # a check has just run
    os.read(read_end, 1)
    gevent.sleep(period * 0.8)  # the last switch, just before the next check
    start = time.time()
    if proxy is not None:
        proxy.freeze()
        proxy.thaw_after(0.6)
        start = time.time()
        conn = psycopg2.connect(_dsn(dsn, proxy.port))
        pid = None
    else:
        cur.execute("SELECT pg_sleep(0.6)")
    end = time.time()
    gevent.sleep(period * 2)
    monitor.add_monitoring_function(lambda _hub: None, None)
    warnings = [
        (r.created - start, r.getMessage()) for r in records.records if r.levelno >= logging.WARNING
    ]

    conn.close()
    if proxy is not None:
        proxy.close()
    return {
        "pid": pid,
        "period": period,
        "watching_after_patch_all": watching,
        "query": end - start,
        "gevent_reports": [at - start for at in reports],
        "warnings": warnings,
        "records": [d for d in recorder.dicts() if d["kind"] == "loop_blocked"],
    }
