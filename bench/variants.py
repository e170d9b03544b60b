# SPDX-License-Identifier: BSD-3-Clause
# sys.path takes plain strings; pgbench lives under a versioned folder.
# ruff: noqa: PTH100, PTH108, PTH120, PTH207
"""One benchmark measurement in a process of its own.

``python bench/variants.py SECTION VARIANT JSON`` sets the process up for VARIANT (monkey-patching
first, for the green variants), runs SECTION with the JSON parameters and prints its result as
one JSON line on stdout. ``bench/run.py`` calls it once per variant, round and case.

Variants (one scheduler per process, one wait callback per process):

- ``blocking`` / ``threads``: psycopg2 with no wait callback (libpq blocks; threads for
  concurrency).
- ``core``: psycopg2 with psycogreen-core's scheduler-free callback (threads for concurrency).
- ``gevent``, ``eventlet``: this project's backends.
- ``legacy-gevent``, ``legacy-eventlet``: psycogreen 1.0.2 (``bench/legacy.py``).
- ``psycopg3-gevent``: psycopg 3 under gevent's monkey-patching (no callback involved).
- ``asyncpg-uvloop``: asyncpg on the uvloop event loop.
- ``pgbench``: PostgreSQL's own C client, the floor.
- ``floor`` (server-free section only): a bare ``poll()`` / ``poll(2)`` loop, no library.
- ``gevent-sub``, ``eventlet-sub``: the backend with a no-op events subscriber
  (``psycogreen.core.events``); ``gevent-timed``, ``eventlet-timed``: with a no-op subscriber of
  per-wait timing (``waits=True``), which installs the callback's timing twin.
"""

from __future__ import annotations

import os.path
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(HERE)  # for bench/legacy.py (first already when run as a script)

VARIANT = sys.argv[2] if __name__ == "__main__" and len(sys.argv) > 2 else ""
# The backend variants with an events subscriber: (backend, per-wait timing?).
SUBSCRIBED = {
    "gevent-sub": ("gevent", False),
    "gevent-timed": ("gevent", True),
    "eventlet-sub": ("eventlet", False),
    "eventlet-timed": ("eventlet", True),
}
GEVENT = {"gevent", "legacy-gevent", "psycopg3-gevent", "gevent-sub", "gevent-timed"}
EVENTLET = {"eventlet", "legacy-eventlet", "eventlet-sub", "eventlet-timed"}

sys.path.append(os.path.dirname(HERE))  # tests.support.monkey
from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for("gevent" if VARIANT in GEVENT else "eventlet" if VARIANT in EVENTLET else "")

import gc  # noqa: E402 (after monkey-patching, on purpose)
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

LARGE_QUERY = "SELECT g, g::float8 / 3, 'row ' || g FROM generate_series(1, %s) g"


def rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Clock:
    """Wall and CPU time (all threads of this process) of a measured span."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


# -- runtimes: how a variant connects and runs concurrent clients ----------------------------


class Runtime:
    """psycopg2 or psycopg 3 behind the DB-API, with threads or greenlets for concurrency."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.callback: Callable[..., None] | None = None
        if variant == "psycopg3-gevent":
            import psycopg

            self.kind = "psycopg3"
            self._psycopg = psycopg
        else:
            import psycopg2
            import psycopg2.extensions

            self.kind = "psycopg2"
            self._psycopg2 = psycopg2
            self.callback = self._install_callback(variant)
            if psycopg2.extensions.get_wait_callback() is not self.callback:
                raise RuntimeError(f"{variant}: the wait callback is not the expected one")
        if variant in GEVENT:
            import gevent

            self._gevent = gevent
            self.green = "gevent"
        elif variant in EVENTLET:
            import eventlet

            self._eventlet = eventlet
            self.green = "eventlet"
        else:
            self.green = ""

    @staticmethod
    def _install_callback(variant: str) -> Callable[..., None] | None:
        import psycopg2.extensions

        if variant in {"blocking", "threads", "floor"}:
            psycopg2.extensions.set_wait_callback(None)
            return None
        if variant == "core":
            import psycogreen.core

            psycogreen.core.patch_psycopg("blocking")
            return psycogreen.core.wait_callback
        if variant == "gevent":
            import psycogreen.gevent

            psycogreen.gevent.patch_psycopg()
            return psycogreen.gevent.gevent_wait_callback
        if variant == "eventlet":
            import psycogreen.eventlet

            psycogreen.eventlet.patch_psycopg()
            return psycogreen.eventlet.eventlet_wait_callback
        if variant in SUBSCRIBED:
            import importlib

            import psycogreen.core.events

            backend, timed = SUBSCRIBED[variant]
            importlib.import_module(f"psycogreen.{backend}").patch_psycopg()
            psycogreen.core.events.subscribe(lambda _record: None, waits=timed)
            return psycopg2.extensions.get_wait_callback()  # type: ignore[no-any-return]
        if variant in {"legacy-gevent", "legacy-eventlet"}:
            import legacy

            module = legacy.load(variant.removeprefix("legacy-"))
            module.patch_psycopg()
            return getattr(module, f"{variant.removeprefix('legacy-')}_wait_callback")  # type: ignore[no-any-return]
        raise SystemExit(f"unknown variant {variant!r}")

    def connect(self, dsn: str, *, autocommit: bool = True) -> Any:
        if self.kind == "psycopg3":
            return self._psycopg.connect(dsn, autocommit=autocommit)
        conn = self._psycopg2.connect(dsn)
        conn.autocommit = autocommit
        return conn

    def spawn(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.green == "gevent":
            return self._gevent.spawn(func, *args)
        if self.green == "eventlet":
            return self._eventlet.spawn(func, *args)
        import threading

        errors: list[BaseException] = []

        def run() -> None:
            try:
                func(*args)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.errors = errors  # type: ignore[attr-defined]
        thread.start()
        return thread

    def join(self, handles: list[Any]) -> None:
        for handle in handles:
            if self.green == "gevent":
                handle.get()
            elif self.green == "eventlet":
                handle.wait()
            else:
                handle.join()
                if handle.errors:
                    raise handle.errors[0]

    def sleep(self, seconds: float) -> None:
        if self.green == "gevent":
            self._gevent.sleep(seconds)
        elif self.green == "eventlet":
            self._eventlet.sleep(seconds)
        else:
            time.sleep(seconds)

    def connect_many(self, dsn: str, count: int, *, autocommit: bool = True) -> list[Any]:
        conns: list[Any] = [None] * count

        def one(i: int) -> None:
            conns[i] = self.connect(dsn, autocommit=autocommit)

        batch = 50  # concurrent connection attempts, below the server's accept backlog
        for start in range(0, count, batch):
            self.join([self.spawn(one, i) for i in range(start, min(count, start + batch))])
        return conns


# -- sections for psycopg2 / psycopg 3 ---------------------------------------------------------


def _server_free() -> tuple[Any, Any]:
    """A psycopg2 connection object whose poll() answers POLL_READ then POLL_OK, on a readable fd."""
    import itertools
    import socket

    import psycopg2.extensions as ext

    class ServerFree(ext.connection):  # type: ignore[misc]
        def __init__(self) -> None:  # no connection attempt: poll and fileno are set below
            pass

    ready, other = socket.socketpair()
    other.send(b"x")  # never read: `ready` stays readable
    conn = ServerFree.__new__(ServerFree)
    conn.poll = itertools.cycle((ext.POLL_READ, ext.POLL_OK)).__next__
    conn.fileno = ready.fileno
    return conn, (ready, other)


def s_perwait(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    """One call of the wait callback: poll() -> POLL_READ, one wait on a readable fd, poll() -> POLL_OK."""
    import select

    import psycopg2.extensions as ext

    conn, _sockets = _server_free()

    callback = rt.callback
    if rt.variant == "floor":

        def callback(conn: Any, timeout: float | None = None) -> None:
            state = conn.poll()
            while state != ext.POLL_OK:
                poller = select.poll()
                poller.register(conn.fileno(), select.POLLIN)
                poller.poll(None if timeout is None else timeout * 1000)
                state = conn.poll()

    assert callback is not None
    calls = int(p["calls"])
    timeout = p.get("timeout")
    if timeout is not None:  # a timed wait: the callback's timeout argument, as 1.x passes it
        untimed = callback

        def callback(conn: Any) -> None:
            untimed(conn, timeout)

    out: dict[str, Any] = {}

    def run() -> None:  # in a greenlet of the hub, like application code
        for _ in range(min(calls, 2000)):  # warm up
            callback(conn)
        gc.collect()
        clock = Clock()
        for _ in range(calls):
            callback(conn)
        wall, cpu = clock.stop()
        out.update(cpu_us=cpu / calls * 1e6, wall_us=wall / calls * 1e6)

    rt.join([rt.spawn(run)])
    conn.__dict__.clear()
    return out


def s_observe(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    """Section 1's call with no subscriber, a no-op subscriber, per-wait timing: in one process.

    The three modes alternate in short blocks (their order rotated per block), so that load
    from elsewhere on the machine falls on each alike; CPU time is summed per mode.
    """
    import psycopg2.extensions as ext

    from psycogreen.core import events

    conn, _sockets = _server_free()
    events.set_wait_sampling(int(p.get("sample", 1)))
    calls = int(p["calls"])
    blocks = int(p.get("blocks", 40))
    per_block = max(1, calls // blocks)
    modes = [("plain", False, False), ("sub", True, False), ("timed", True, True)]
    cpu = {name: 0.0 for name, _, _ in modes}

    def noop(_record: Any) -> None:
        pass

    def run() -> None:
        callback = ext.get_wait_callback()
        for _ in range(2000):  # warm up
            callback(conn)
        gc.collect()
        for block in range(blocks):
            order = modes[block % 3 :] + modes[: block % 3]
            for name, subscribed, timed in order:
                if subscribed:
                    events.subscribe(noop, waits=timed)
                callback = ext.get_wait_callback()
                start = time.process_time()
                for _ in range(per_block):
                    callback(conn)
                cpu[name] += time.process_time() - start
                if subscribed:
                    events.unsubscribe(noop)

    rt.join([rt.spawn(run)])
    conn.__dict__.clear()
    n = per_block * blocks
    out = {f"{name}_us": seconds / n * 1e6 for name, seconds in cpu.items()}
    out["sub_ratio"] = cpu["sub"] / cpu["plain"]
    out["timed_ratio"] = cpu["timed"] / cpu["plain"]
    return out


def s_latency(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    queries = int(p["queries"])
    conn = rt.connect(p["dsn"])
    out: dict[str, Any] = {}

    def run() -> None:
        cur = conn.cursor()
        for _ in range(200):
            cur.execute("SELECT 1")
            cur.fetchone()
        clock = Clock()
        for _ in range(queries):
            cur.execute("SELECT 1")
            cur.fetchone()
        wall, cpu = clock.stop()
        out.update(wall_us=wall / queries * 1e6, cpu_us=cpu / queries * 1e6)

    rt.join([rt.spawn(run)])
    conn.close()
    return out


def s_throughput(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    clients, duration = int(p["clients"]), float(p["duration"])
    conns = rt.connect_many(p["dsn"], clients)
    counts = [0] * clients
    deadline = 0.0

    def run(i: int) -> None:
        cur = conns[i].cursor()
        n = 0
        monotonic = time.monotonic
        while monotonic() < deadline:
            cur.execute("SELECT 1")
            cur.fetchone()
            n += 1
        counts[i] = n

    gc.collect()
    clock = Clock()
    deadline = time.monotonic() + duration
    rt.join([rt.spawn(run, i) for i in range(clients)])
    wall, cpu = clock.stop()
    for conn in conns:
        conn.close()
    total = sum(counts)
    return {"qps": total / wall, "cpu_us": cpu / total * 1e6, "queries": total}


def s_concurrency(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    clients, each, sleep = int(p["clients"]), int(p["each"]), float(p["sleep"])
    conns = rt.connect_many(p["dsn"], clients)

    def run(i: int) -> None:
        cur = conns[i].cursor()
        for _ in range(each):
            cur.execute("SELECT pg_sleep(%s)", (sleep,))
            cur.fetchone()

    gc.collect()
    clock = Clock()
    rt.join([rt.spawn(run, i) for i in range(clients)])
    wall, cpu = clock.stop()
    for conn in conns:
        conn.close()
    return {"ratio": wall / (each * sleep), "wall_s": wall, "cpu_ms": cpu * 1e3}


def s_large(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    rows, mode = int(p["rows"]), p["mode"]
    conn = rt.connect(p["dsn"], autocommit=False)
    out: dict[str, Any] = {}

    def run() -> None:
        gc.collect()
        clock = Clock()
        if mode == "fetchall":
            cur = conn.cursor()
            cur.execute(LARGE_QUERY, (rows,))
            n = len(cur.fetchall())
        else:
            cur = conn.cursor(name="bench_large")
            cur.itersize = 2000
            cur.execute(LARGE_QUERY, (rows,))
            n = sum(1 for _ in cur)
        cur.close()
        conn.commit()
        wall, cpu = clock.stop()
        assert n == rows, n
        out.update(wall_s=wall, cpu_s=cpu)

    rt.join([rt.spawn(run)])
    conn.close()
    return out


def _gaps(ticks: list[float]) -> dict[str, Any]:
    gaps = sorted((b - a) * 1e3 for a, b in itertools.pairwise(ticks))
    return {
        "max_gap_ms": gaps[-1],
        "p99_gap_ms": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
        "ticks": len(ticks),
    }


def s_fairness(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    clients, each, sleep = int(p["clients"]), int(p["each"]), float(p["sleep"])
    conns = rt.connect_many(p["dsn"], clients)
    ticks: list[float] = []
    done = False

    def heartbeat() -> None:
        while not done:
            ticks.append(time.perf_counter())
            rt.sleep(0.01)

    def run(i: int) -> None:
        cur = conns[i].cursor()
        for _ in range(each):
            cur.execute("SELECT pg_sleep(%s)", (sleep,))
            cur.fetchone()

    gc.collect()
    beat = rt.spawn(heartbeat)
    rt.sleep(0.05)
    clock = Clock()
    rt.join([rt.spawn(run, i) for i in range(clients)])
    wall, _ = clock.stop()
    done = True
    rt.join([beat])
    for conn in conns:
        conn.close()
    start = clock.wall0
    return {**_gaps([t for t in ticks if t >= start - 0.011]), "wall_s": wall}


def s_connect(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    count = int(p["count"])
    out: dict[str, Any] = {}

    def run() -> None:
        rt.connect(p["dsn"]).close()
        clock = Clock()
        for _ in range(count):
            rt.connect(p["dsn"]).close()
        wall, cpu = clock.stop()
        out.update(wall_ms=wall / count * 1e3, cpu_ms=cpu / count * 1e3)

    rt.join([rt.spawn(run)])
    return out


def s_rss(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    clients, sleep = int(p["clients"]), float(p["sleep"])
    gc.collect()
    base = rss_mb()
    conns = rt.connect_many(p["dsn"], clients)
    waiting = [0]

    def run(i: int) -> None:
        cur = conns[i].cursor()
        waiting[0] += 1
        cur.execute("SELECT pg_sleep(%s)", (sleep,))
        cur.fetchone()

    handles = [rt.spawn(run, i) for i in range(clients)]
    while waiting[0] < clients:
        rt.sleep(0.01)
    rt.sleep(min(0.5, sleep / 3))
    rss = rss_mb()
    rt.join(handles)
    for conn in conns:
        conn.close()
    return {"rss_mb": rss, "base_mb": base, "per_conn_kb": (rss - base) * 1024 / clients}


def s_leak(rt: Runtime, p: dict[str, Any]) -> dict[str, Any]:
    total, clients = int(p["queries"]), int(p["clients"])
    conns = rt.connect_many(p["dsn"], clients)

    def run(i: int, n: int) -> None:
        cur = conns[i].cursor()
        for _ in range(n):
            cur.execute("SELECT 1")
            cur.fetchone()

    def phase(n: int) -> None:
        rt.join([rt.spawn(run, i, n // clients) for i in range(clients)])
        gc.collect()

    phase(max(total // 10, clients))  # warm-up: caches, free lists and arenas reach size
    start = rss_mb()
    clock = Clock()
    samples = []
    for _ in range(10):
        phase(total // 10)
        samples.append(rss_mb())
    wall, cpu = clock.stop()
    for conn in conns:
        conn.close()
    return {
        "growth_mb": samples[-1] - start,
        "start_mb": start,
        "peak_mb": max(samples),
        "cpu_us": cpu / total * 1e6,
        "wall_s": wall,
    }


# -- asyncpg on uvloop -------------------------------------------------------------------------


def asyncpg_section(section: str, p: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    import asyncpg
    import psycopg2.extensions
    import uvloop

    args = psycopg2.extensions.parse_dsn(p["dsn"])
    kwargs = {
        "host": args["host"],
        "port": int(args["port"]),
        "user": args["user"],
        "database": args["dbname"],
    }

    async def connect() -> Any:
        return await asyncpg.connect(**kwargs)

    async def connect_many(count: int) -> list[Any]:
        conns: list[Any] = []
        for start in range(0, count, 50):
            conns += await asyncio.gather(
                *(connect() for _ in range(start, min(count, start + 50)))
            )
        return conns

    async def close_all(conns: list[Any]) -> None:
        await asyncio.gather(*(c.close() for c in conns))

    async def latency() -> dict[str, Any]:
        conn = await connect()
        queries = int(p["queries"])
        for _ in range(200):
            await conn.fetchval("SELECT 1")
        clock = Clock()
        for _ in range(queries):
            await conn.fetchval("SELECT 1")
        wall, cpu = clock.stop()
        await conn.close()
        return {"wall_us": wall / queries * 1e6, "cpu_us": cpu / queries * 1e6}

    async def throughput() -> dict[str, Any]:
        clients, duration = int(p["clients"]), float(p["duration"])
        conns = await connect_many(clients)
        deadline = time.monotonic() + duration

        async def run(conn: Any) -> int:
            n = 0
            while time.monotonic() < deadline:
                await conn.fetchval("SELECT 1")
                n += 1
            return n

        clock = Clock()
        deadline = time.monotonic() + duration
        total = sum(await asyncio.gather(*(run(c) for c in conns)))
        wall, cpu = clock.stop()
        await close_all(conns)
        return {"qps": total / wall, "cpu_us": cpu / total * 1e6, "queries": total}

    async def sleepers(conns: list[Any], each: int, sleep: float) -> None:
        async def run(conn: Any) -> None:
            for _ in range(each):
                await conn.fetchval("SELECT pg_sleep($1)", sleep)

        await asyncio.gather(*(run(c) for c in conns))

    async def concurrency() -> dict[str, Any]:
        clients, each, sleep = int(p["clients"]), int(p["each"]), float(p["sleep"])
        conns = await connect_many(clients)
        clock = Clock()
        await sleepers(conns, each, sleep)
        wall, cpu = clock.stop()
        await close_all(conns)
        return {"ratio": wall / (each * sleep), "wall_s": wall, "cpu_ms": cpu * 1e3}

    async def large() -> dict[str, Any]:
        rows, mode = int(p["rows"]), p["mode"]
        conn = await connect()
        query = LARGE_QUERY.replace("%s", "$1::int")
        clock = Clock()
        if mode == "fetchall":
            n = len(await conn.fetch(query, rows))
        else:
            n = 0
            async with conn.transaction():
                async for _ in conn.cursor(query, rows, prefetch=2000):
                    n += 1
        wall, cpu = clock.stop()
        assert n == rows
        await conn.close()
        return {"wall_s": wall, "cpu_s": cpu}

    async def fairness() -> dict[str, Any]:
        clients, each, sleep = int(p["clients"]), int(p["each"]), float(p["sleep"])
        conns = await connect_many(clients)
        ticks: list[float] = []
        done = False

        async def heartbeat() -> None:
            while not done:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        beat = asyncio.ensure_future(heartbeat())
        await asyncio.sleep(0.05)
        clock = Clock()
        await sleepers(conns, each, sleep)
        wall, _ = clock.stop()
        done = True
        await beat
        await close_all(conns)
        return {**_gaps([t for t in ticks if t >= clock.wall0 - 0.011]), "wall_s": wall}

    async def connect_section() -> dict[str, Any]:
        count = int(p["count"])
        await (await connect()).close()
        clock = Clock()
        for _ in range(count):
            await (await connect()).close()
        wall, cpu = clock.stop()
        return {"wall_ms": wall / count * 1e3, "cpu_ms": cpu / count * 1e3}

    async def rss() -> dict[str, Any]:
        clients, sleep = int(p["clients"]), float(p["sleep"])
        gc.collect()
        base = rss_mb()
        conns = await connect_many(clients)
        task = asyncio.ensure_future(sleepers(conns, 1, sleep))
        await asyncio.sleep(min(0.5, sleep / 3))
        value = rss_mb()
        await task
        await close_all(conns)
        return {"rss_mb": value, "base_mb": base, "per_conn_kb": (value - base) * 1024 / clients}

    table = {
        "latency": latency,
        "throughput": throughput,
        "concurrency": concurrency,
        "large": large,
        "fairness": fairness,
        "connect": connect_section,
        "rss": rss,
    }
    if section not in table:
        raise SystemExit(f"asyncpg-uvloop: no section {section!r}")
    result: dict[str, Any] = uvloop.run(table[section]())
    return result


# -- pgbench -----------------------------------------------------------------------------------


def pgbench_section(section: str, p: dict[str, Any]) -> dict[str, Any]:
    import glob

    import psycopg2.extensions

    args = psycopg2.extensions.parse_dsn(p["dsn"])
    env = {
        **os.environ,
        "PGHOST": args["host"],
        "PGPORT": str(args["port"]),
        "PGUSER": args["user"],
        "PGDATABASE": args["dbname"],
    }
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pgbench"),
        key=lambda s: int(s.split("/")[4]) if s.split("/")[4].isdigit() else 0,
    )
    pgbench = os.environ.get("PGBENCH") or (found[-1] if found else "pgbench")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("SELECT 1;\n")
    # One pgbench thread (-j 1), like the single-threaded Python clients; simple query
    # protocol, like psycopg2.
    cmd = [pgbench, "-n", "-M", "simple", "-j", "1", "-f", script.name]
    if section == "latency":
        n = int(p["queries"])
        cmd += ["-c", "1", "-t", str(n)]
    elif section == "throughput":
        cmd += ["-c", str(p["clients"]), "-T", str(max(1, round(float(p["duration"]))))]
    elif section == "connect":
        n = int(p["count"])
        cmd += ["-C", "-c", "1", "-t", str(n)]
    else:
        raise SystemExit(f"pgbench: no section {section!r}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    clock = Clock()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall, _ = clock.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(script.name)
    if out.returncode:
        raise RuntimeError(f"pgbench failed: {out.stdout}\n{out.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    done = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    latency_ms = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))  # type: ignore[union-attr]
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    if section == "latency":
        return {"wall_us": latency_ms * 1e3, "cpu_us": cpu / done * 1e6}
    if section == "throughput":
        return {"qps": tps, "cpu_us": cpu / done * 1e6, "queries": done}
    # -C: a new connection per transaction (connect + SELECT 1 + close)
    return {"wall_ms": wall / done * 1e3, "cpu_ms": cpu / done * 1e3}


SECTIONS: dict[str, Callable[[Runtime, dict[str, Any]], dict[str, Any]]] = {
    "perwait": s_perwait,
    "observe": s_observe,
    "latency": s_latency,
    "throughput": s_throughput,
    "concurrency": s_concurrency,
    "large": s_large,
    "fairness": s_fairness,
    "connect": s_connect,
    "rss": s_rss,
    "leak": s_leak,
}


def main() -> None:
    section, variant, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if variant == "asyncpg-uvloop":
        result = asyncpg_section(section, params)
    elif variant == "pgbench":
        result = pgbench_section(section, params)
    else:
        result = SECTIONS[section](Runtime(variant), params)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["max_rss_mb"] = usage.ru_maxrss / 1024
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
