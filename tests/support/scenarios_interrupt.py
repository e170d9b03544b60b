# SPDX-License-Identifier: BSD-3-Clause
"""Interruptions and misuse, run inside a monkey-patched subprocess (see ``green.py``).

Names for ``run_green``: ``"scenarios_interrupt:<function>"``. Every scenario checks the
server side from a separate connection (``pg_stat_activity``), or through the proxy's count of
upstream connections where the server never saw the client.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from tests.support.green import Scheduler, heartbeat
from tests.support.proxy import Proxy

APP = f"psycogreen-it-{os.getpid()}"
INTERRUPT_AFTER = 0.1


def _patch(sched: Scheduler) -> Any:
    backend = importlib.import_module(f"psycogreen.{sched.name}")
    backend.patch_psycopg()
    return backend


def _dsn(dsn: str, port: int | None = None) -> str:
    out = f"{dsn} application_name={APP}"
    if port is not None:
        out += f" host=127.0.0.1 port={port}"
    return out


def _server(dsn: str) -> tuple[str, int]:
    params = psycopg2.extensions.parse_dsn(dsn)
    return params.get("host", "127.0.0.1"), int(params.get("port", 5432))


class Watcher:
    """A separate connection that reads the server's view of the test's backends."""

    def __init__(self, sched: Scheduler, dsn: str) -> None:
        self.sched = sched
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()

    def state(self, pid: int) -> str:
        self.cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = self.cur.fetchone()
        return "gone" if row is None else str(row[0])

    def settle(self, pid: int, since: float, limit: float = 3.0) -> tuple[str, float]:
        """Poll until the backend is no longer active: its state and the time since ``since``."""
        state = self.state(pid)
        while state == "active" and time.perf_counter() - since < limit:
            self.sched.sleep(0.002)
            state = self.state(pid)
        return state, time.perf_counter() - since

    def gone(self, pid: int, limit: float = 3.0) -> bool:
        start = time.perf_counter()
        while self.state(pid) != "gone":
            if time.perf_counter() - start > limit:
                return False
            self.sched.sleep(0.01)
        return True

    def leaked(self, limit: float = 3.0) -> int:
        """Backends of this process still there ``limit`` seconds after everything closed."""
        start = time.perf_counter()
        while True:
            self.cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP,)
            )
            count = int(self.cur.fetchone()[0])
            if count == 0 or time.perf_counter() - start > limit:
                return count
            self.sched.sleep(0.02)


# --- the operations an interrupt can hit ------------------------------------------------------


class Op:
    """One operation that waits in the callback long enough to be interrupted."""

    proxied = False  # the operation hangs on a frozen proxy rather than on a slow server

    def __init__(self, sched: Scheduler, dsn: str, proxy: Proxy | None) -> None:
        self.sched = sched
        self.dsn = dsn
        self.proxy = proxy
        self.conn: Any = None
        self.pid: int | None = None

    def connect(self, **kw: Any) -> Any:
        port = self.proxy.port if self.proxied and self.proxy else None
        self.conn = psycopg2.connect(_dsn(self.dsn, port), **kw)
        self.pid = self.conn.get_backend_pid()
        return self.conn

    def prepare(self) -> None:
        self.connect()

    def run(self) -> Any:
        raise NotImplementedError

    def release(self) -> None:
        """After the interrupt: let a frozen proxy forward again."""
        if self.proxied and self.proxy is not None:
            self.proxy.thaw()


class Execute(Op):
    def run(self) -> Any:
        cur = self.conn.cursor()
        cur.execute("SELECT pg_sleep(5)")
        return cur.fetchone()


class Commit(Op):
    """A COMMIT that runs a deferred constraint trigger sleeping 5 s."""

    def prepare(self) -> None:
        conn = self.connect()
        cur = conn.cursor()
        cur.execute(
            "CREATE TEMP TABLE slow_commit (x float);"
            "CREATE FUNCTION pg_temp.slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(NEW.x); RETURN NULL; END $$;"
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commit "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.slow_commit()"
        )
        conn.commit()
        cur.execute("INSERT INTO slow_commit VALUES (5)")

    def run(self) -> Any:
        self.conn.commit()


class NamedFetch(Op):
    """A FETCH from a server-side cursor whose second row takes 5 s."""

    def prepare(self) -> None:
        conn = self.connect()
        self.cur = conn.cursor("slow_rows")
        self.cur.execute(
            "SELECT g, pg_sleep(CASE WHEN g = 1 THEN 0 ELSE 5 END) FROM generate_series(1, 3) g"
        )
        assert self.cur.fetchone()[0] == 1

    def run(self) -> Any:
        return self.cur.fetchone()


class ListenWait(Op):
    """Waiting for a NOTIFY: the program's own wait, no query in flight."""

    def prepare(self) -> None:
        conn = self.connect()
        conn.autocommit = True
        conn.cursor().execute("LISTEN psycogreen_interrupt")

    def run(self) -> Any:
        while not self.conn.notifies:
            self.sched.wait_read(self.conn.fileno())
            self.conn.poll()
        return self.conn.notifies.pop()


class Connect(Op):
    """A connect to a server that does not answer (a frozen proxy)."""

    proxied = True

    def prepare(self) -> None:
        assert self.proxy is not None
        self.proxy.freeze()

    def run(self) -> Any:
        return self.connect()


class Rollback(Op):
    """A ROLLBACK that gets no answer (the proxy freezes after BEGIN)."""

    proxied = True

    def prepare(self) -> None:
        assert self.proxy is not None
        conn = self.connect()
        conn.cursor().execute("SELECT 1")  # BEGIN: a transaction to roll back
        self.proxy.freeze()

    def run(self) -> Any:
        self.conn.rollback()


OPS: dict[str, type[Op]] = {
    "execute": Execute,
    "commit": Commit,
    "named_fetch": NamedFetch,
    "listen_wait": ListenWait,
    "connect": Connect,
    "rollback": Rollback,
}


def _native(sched: Scheduler) -> tuple[Callable[..., Any], Callable[[float], None]]:
    """The unpatched ``_thread.start_new_thread`` and ``time.sleep``."""
    if sched.name == "gevent":
        from gevent.monkey import get_original

        return get_original("_thread", "start_new_thread"), get_original("time", "sleep")
    from eventlet.patcher import original

    return original("_thread").start_new_thread, original("time").sleep


def _spawn_sleeper(sched: Scheduler, conn: Any, state: dict[str, Any], seconds: float) -> Any:
    """A task running ``pg_sleep(seconds)`` on ``conn``; ``state`` gets the error's class name
    (``"error"``) and when the task ended (``"at"``)."""

    def sleeper() -> None:
        try:
            conn.cursor().execute("SELECT pg_sleep(%s)", (seconds,))
        except psycopg2.Error as exc:
            state["error"] = type(exc).__name__
        state["at"] = time.perf_counter()

    return sched.spawn(sleeper)


def _throw(sched: Scheduler, task: Any, exc: type[BaseException]) -> None:
    if sched.name == "gevent":
        task.kill(exc, block=False)
    else:
        task.kill(exc)


def _interrupt_once(sched: Scheduler, op: Op, how: str) -> dict[str, Any]:
    """Run ``op`` and interrupt it ``how``; report what the caller saw."""
    marks: dict[str, Any] = {}
    timer: Any = None

    def victim() -> Any:
        nonlocal timer
        try:
            if how == "timeout":
                marks["interrupt"] = time.perf_counter() + INTERRUPT_AFTER
                with sched.timeout(INTERRUPT_AFTER) as timer:
                    op.run()
            else:
                op.run()
        except BaseException as exc:
            marks["raised"] = time.perf_counter()
            marks["exc"] = exc
            if how == "kill":
                raise  # a kill must end the greenlet
            return None
        marks["finished"] = True
        return None

    if how == "sigint":
        # A real SIGINT, sent from an OS thread while the main greenlet (where Python
        # raises KeyboardInterrupt) waits for the server.
        start_thread, real_sleep = _native(sched)

        def send() -> None:
            real_sleep(INTERRUPT_AFTER)
            marks["interrupt"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)

        start_thread(send, ())
        try:
            victim()
        except KeyboardInterrupt as exc:  # arrived outside the operation
            marks["late"] = repr(exc)
    else:
        task = sched.spawn(victim)
        if how in {"kill", "keyboard"}:
            sched.sleep(INTERRUPT_AFTER)
            marks["interrupt"] = time.perf_counter()
            if how == "kill":
                sched.kill(task)
            else:
                _throw(sched, task, KeyboardInterrupt)
        sched.join([task])
        marks["task_dead"] = bool(task.dead)
    exc = marks.get("exc")
    out: dict[str, Any] = {
        "exc": type(exc).__name__ if exc is not None else None,
        "finished": marks.get("finished", False),
        "late": marks.get("late"),
        "task_dead": marks.get("task_dead", True),
        "raise_delay": marks.get("raised", 0.0) - marks.get("interrupt", 0.0),
    }
    if how == "timeout":
        out["same_timeout"] = exc is timer
    out["interrupt"] = marks.get("interrupt", time.perf_counter())
    return out


def _after(op: Op, watcher: Watcher, since: float) -> dict[str, Any]:
    """The connection's state and the server's after an interrupt."""
    out: dict[str, Any] = {}
    conn = op.conn
    if conn is not None and not op.proxied:
        out["server_state"], out["settle"] = watcher.settle(op.pid or 0, since)
    op.release()
    if conn is None:
        out["closed"] = None  # connect: no connection object was returned
    else:
        out["closed"] = conn.closed
        if conn.closed:
            out["usable"] = False
        else:
            conn.rollback()
            cur = conn.cursor()
            cur.execute("SELECT 42")
            out["usable"] = cur.fetchone()[0] == 42
        if op.pid is not None and conn.closed:
            out["backend_gone"] = watcher.gone(op.pid)
        conn.close()
    if op.proxy is not None:
        start = time.perf_counter()
        while op.proxy.count() and time.perf_counter() - start < 3:
            op.sched.sleep(0.02)
        out["proxy_upstreams"] = op.proxy.count()
    # a replacement connection works
    fresh = psycopg2.connect(_dsn(op.dsn))
    cur = fresh.cursor()
    cur.execute("SELECT 7")
    out["replacement"] = cur.fetchone()[0]
    fresh.close()
    return out


def interrupt(
    sched: Scheduler, dsn: str, op: str = "execute", how: str = "timeout", repeat: int = 5
) -> dict[str, Any]:
    """Interrupt ``op`` ``repeat`` times, ``how``: timeout, kill, keyboard (thrown), sigint."""
    from psycogreen import core

    _patch(sched)
    kind = OPS[op]
    core.set_cancel_timeout(0.3)  # the frozen-proxy cases: their cancel is black-holed too
    watcher = Watcher(sched, dsn)
    runs = []
    proxy = Proxy(*_server(dsn)) if kind.proxied else None
    for _ in range(repeat):
        case = kind(sched, dsn, proxy)
        case.prepare()
        # the heartbeat covers the operation, the interrupt and the cancel
        with heartbeat(sched, 0.005) as hb:
            seen = _interrupt_once(sched, case, how)
        seen["max_gap"] = max(hb.gaps, default=0.0)
        seen.update(_after(case, watcher, seen.pop("interrupt")))
        runs.append(seen)
    if proxy is not None:
        proxy.close()
    return {"runs": runs, **_summary(runs), "leaked": watcher.leaked()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and worst of the settle times and of the heartbeat's worst gaps, per run."""
    settles = [r["settle"] for r in runs if "settle" in r]
    gaps = [r["max_gap"] for r in runs]
    return {
        "median_settle": statistics.median(settles) if settles else None,
        "max_settle": max(settles) if settles else None,
        "median_gap": statistics.median(gaps),
        "max_gap": max(gaps),
    }


# --- psycogreen's deadline: cancelled, connection kept --------------------------------------


def deadline(
    sched: Scheduler, dsn: str, op: str = "execute", how: str = "block", repeat: int = 3
) -> dict[str, Any]:
    """A psycogreen deadline (0.2 s) on ``op``, ``repeat`` times; ``how`` = block
    (core.timeout), connection (psycogreen_timeout=), set_timeout, or partial (the
    callback's timeout argument)."""
    backend = _patch(sched)
    watcher = Watcher(sched, dsn)
    proxy = Proxy(*_server(dsn)) if OPS[op].proxied else None
    runs = [_deadline_once(sched, dsn, backend, watcher, proxy, op, how) for _ in range(repeat)]
    if proxy is not None:
        proxy.close()
    return {"runs": runs, **_summary(runs), "leaked": watcher.leaked()}


def _deadline_once(  # noqa: PLR0917
    sched: Scheduler,
    dsn: str,
    backend: Any,
    watcher: Watcher,
    proxy: Proxy | None,
    op: str,
    how: str,
) -> dict[str, Any]:
    import functools

    from psycogreen import core

    case = OPS[op](sched, dsn, proxy)
    limit = 0.2
    if how == "connection":
        original = case.connect
        case.connect = lambda **kw: original(psycogreen_timeout=limit, **kw)  # type: ignore[method-assign]
    case.prepare()
    if how == "set_timeout" and case.conn is not None:
        core.set_timeout(case.conn, limit)
    if how == "partial":
        callback = getattr(backend, f"{sched.name}_wait_callback")
        psycopg2.extensions.set_wait_callback(functools.partial(callback, timeout=limit))
    out: dict[str, Any] = {}
    with heartbeat(sched, 0.005) as hb:
        start = time.perf_counter()
        try:
            if how == "block":
                with core.timeout(limit):
                    case.run()
            else:
                case.run()
            out["exc"] = None
        except Exception as exc:
            out["exc"] = type(exc).__name__
            out["pgcode"] = getattr(exc, "pgcode", None)
            out["message"] = str(exc)
        out["elapsed"] = time.perf_counter() - start
    if how == "partial":
        backend.patch_psycopg(force=True)
    out["max_gap"] = max(hb.gaps, default=0.0)
    out.update(_after(case, watcher, start + limit))
    return out


# --- misuse from another greenlet -----------------------------------------------------------


class UserConnection(psycopg2.extensions.connection):
    """A user's connection_factory with its own override."""

    commits = 0

    def commit(self) -> None:
        UserConnection.commits += 1
        super().commit()


def _factories(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    if name == "dict":
        return {
            "connection_factory": psycopg2.extras.DictConnection,
            "cursor_factory": psycopg2.extras.RealDictCursor,
        }
    if name == "namedtuple":
        return {"connection_factory": psycopg2.extras.NamedTupleConnection}
    if name == "user":
        return {"connection_factory": UserConnection}
    raise ValueError(name)


MISUSES: dict[str, Callable[[Any, Any], Any]] = {
    "commit": lambda c, _n: c.commit(),
    "rollback": lambda c, _n: c.rollback(),
    "close": lambda c, _n: c.close(),
    "reset": lambda c, _n: c.reset(),
    "execute": lambda c, _n: c.cursor().execute("SELECT 1"),
    "executemany": lambda c, _n: c.cursor().executemany("SELECT %s", [(1,), (2,)]),
    "callproc": lambda c, _n: c.cursor().callproc("version"),
    "set_session": lambda c, _n: c.set_session(readonly=True),
    "autocommit": lambda c, _n: setattr(c, "autocommit", True),
    "isolation_level": lambda c, _n: setattr(c, "isolation_level", "SERIALIZABLE"),
    "readonly": lambda c, _n: setattr(c, "readonly", True),
    "deferrable": lambda c, _n: setattr(c, "deferrable", True),
    "set_isolation_level": lambda c, _n: c.set_isolation_level(1),
    "set_client_encoding": lambda c, _n: c.set_client_encoding("LATIN1"),
    "tpc_begin": lambda c, _n: c.tpc_begin(c.xid(1, "g", "b")),
    "tpc_recover": lambda c, _n: c.tpc_recover(),
    "tpc_commit": lambda c, _n: c.tpc_commit(),
    "tpc_rollback": lambda c, _n: c.tpc_rollback(),
    "tpc_prepare": lambda c, _n: c.tpc_prepare(),
    "with_exit": lambda c, _n: c.__exit__(None, None, None),
    "named_fetchone": lambda _c, n: n.fetchone(),
    "named_fetchmany": lambda _c, n: n.fetchmany(2),
    "named_fetchall": lambda _c, n: n.fetchall(),
    "named_iterate": lambda _c, n: next(iter(n)),
    "named_scroll": lambda _c, n: n.scroll(1),
    "named_close": lambda _c, n: n.close(),
}


def misuse(
    sched: Scheduler, dsn: str, factory: str = "default", via: str = "psycopg2"
) -> dict[str, Any]:
    """Another greenlet uses a connection whose query is in flight."""
    _patch(sched)
    kwargs = _factories(factory)
    make: Callable[[], Any]
    if via == "psycopg2":
        make = lambda: psycopg2.connect(_dsn(dsn), **kwargs)  # noqa: E731
    elif via == "sqlalchemy":
        import sqlalchemy

        params = psycopg2.extensions.parse_dsn(dsn)
        url = sqlalchemy.engine.URL.create(
            "postgresql+psycopg2",
            username=params.get("user"),
            password=params.get("password"),
            host=params.get("host"),
            port=int(params["port"]) if "port" in params else None,
            database=params.get("dbname"),
            query={"application_name": APP},
        )
        engine = sqlalchemy.create_engine(
            url, connect_args=kwargs, poolclass=sqlalchemy.pool.NullPool
        )
        fairies: list[Any] = []  # SQLAlchemy closes the connection with its wrapper

        def make() -> Any:
            fairies.append(engine.raw_connection())
            return fairies[-1].driver_connection

    elif via == "django":
        make = _django_connection(dsn)
    else:
        raise ValueError(via)
    watcher = Watcher(sched, dsn)
    out: dict[str, Any] = {"errors": {}}
    for name, action in MISUSES.items():
        conn = make()
        conn.autocommit = False  # Django's are in autocommit mode; a named cursor needs BEGIN
        named = conn.cursor("held")
        named.execute("SELECT generate_series(1, 10)")
        result: dict[str, Any] = {}

        def query(conn: Any = conn, result: dict[str, Any] = result) -> None:
            cur = conn.cursor(cursor_factory=psycopg2.extensions.cursor)  # rows as tuples
            cur.execute("SELECT pg_sleep(0.2), 'intact'")
            result["row"] = list(cur.fetchone())

        task = sched.spawn(query)
        sched.sleep(0.05)
        start = time.perf_counter()
        try:
            action(conn, named)
            error = None
        except psycopg2.Error as exc:
            error = [type(exc).__name__, isinstance(exc, psycopg2.ProgrammingError), str(exc)]
        elapsed = time.perf_counter() - start
        sched.join([task])
        out["errors"][name] = {
            "error": error,
            "elapsed": elapsed,
            "first": result.get("row"),
            "closed_after": conn.closed,
        }
        conn.rollback()
        conn.close()
    # conn.cancel() from another greenlet keeps working
    conn = make()
    conn.autocommit = False
    state: dict[str, Any] = {}

    task = _spawn_sleeper(sched, conn, state, 5)
    sched.sleep(0.1)
    start = time.perf_counter()
    conn.cancel()
    sched.join([task])
    out["cancel"] = {
        "error": state.get("error"),
        "delay": state["at"] - start,
        "closed": conn.closed,
    }
    conn.rollback()
    cur = conn.cursor(cursor_factory=psycopg2.extensions.cursor)
    cur.execute("SELECT 5")
    out["cancel"]["after"] = cur.fetchone()[0]
    out["class"] = f"{type(conn).__module__}.{type(conn).__qualname__}"
    out["mro"] = [c.__name__ for c in type(conn).__mro__]
    out["cursor_mro"] = [c.__name__ for c in type(conn.cursor()).__mro__]
    out["user_commits"] = UserConnection.commits
    conn.close()
    out["leaked"] = watcher.leaked()
    return out


def _django_connection(dsn: str) -> Callable[[], Any]:
    import sys

    # Django prefers psycopg 3 when it is importable (the test environment has it): make it
    # take psycopg2, the driver under test.
    sys.modules["psycopg"] = None  # type: ignore[assignment]
    import django
    from django.conf import settings

    params = psycopg2.extensions.parse_dsn(dsn)
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": params.get("dbname", "postgres"),
                "USER": params.get("user", ""),
                "PASSWORD": params.get("password", ""),
                "HOST": params.get("host", ""),
                "PORT": params.get("port", ""),
                "OPTIONS": {"application_name": APP},
            }
        }
    )
    django.setup()
    from django.db import connections

    def make() -> Any:
        wrapper = connections.create_connection("default")
        wrapper.ensure_connection()
        return wrapper.connection

    return make


# --- native threads -------------------------------------------------------------------------


def native_threads(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """Queries from OS threads: a plain thread and the scheduler's thread pool."""
    from psycogreen import core

    _patch(sched)
    start_thread, _ = _native(sched)
    if sched.name == "gevent":
        import gevent

        def pool(func: Callable[[], Any]) -> Any:
            return gevent.get_hub().threadpool.apply(func)
    else:
        from eventlet import tpool

        def pool(func: Callable[[], Any]) -> Any:
            return tpool.execute(func)

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            start = time.perf_counter()
            conn = psycopg2.connect(_dsn(dsn))
            cur = conn.cursor()
            cur.execute("SELECT pg_sleep(0.3), 11")
            out["row"] = cur.fetchone()[1]
            out["elapsed"] = time.perf_counter() - start
            start = time.perf_counter()
            try:
                with core.timeout(0.2):
                    cur.execute("SELECT pg_sleep(5)")
            except psycopg2.errors.QueryCanceled:
                out["deadline"] = time.perf_counter() - start
            conn.rollback()
            cur.execute("SELECT 12")
            out["after"] = cur.fetchone()[0]
            conn.close()
        except BaseException as exc:
            out["error"] = repr(exc)
        return out

    results: dict[str, Any] = {}
    done: list[bool] = []

    def hub_here() -> bool:
        """Whether this OS thread has a hub (the waits must not create one)."""
        if sched.name == "gevent":
            from gevent._hub_local import get_hub_if_exists

            return get_hub_if_exists() is not None
        from eventlet.hubs import _threadlocal

        return getattr(_threadlocal, "hub", None) is not None

    def thread_main() -> None:
        results["thread_hub_before"] = hub_here()
        results["thread"] = work()
        results["thread_hub_after"] = hub_here()
        done.append(True)

    with heartbeat(sched, 0.005) as hb:
        # the hub keeps running main-thread greenlets meanwhile
        ticks = sched.spawn(lambda: [sched.sleep(0.01) for _ in range(30)])
        start_thread(thread_main, ())
        while not done:
            sched.sleep(0.01)
        sched.join([ticks])
        results["pool"] = pool(work)
    results["max_gap"] = max(hb.gaps, default=0.0)
    results["leaked"] = Watcher(sched, dsn).leaked()
    return results


# --- stress ---------------------------------------------------------------------------------


def kill_storm(  # noqa: PLR0917
    sched: Scheduler,
    dsn: str,
    workers: int = 200,
    queries: int = 50,
    killed: float = 0.1,
    pool_size: int = 40,
) -> dict[str, Any]:
    """``workers`` greenlets x ``queries`` queries over a pool; a fraction killed at random."""
    _patch(sched)
    rng = random.Random(1234)
    idle: list[Any] = [psycopg2.connect(_dsn(dsn)) for _ in range(pool_size)]
    stats = {"mixed": 0, "ok": 0, "replaced": 0, "errors": [], "killed": 0}

    def take() -> Any:
        while not idle:
            sched.sleep(0.001)
        return idle.pop()

    def give(conn: Any) -> None:
        if conn.closed:
            stats["replaced"] += 1
            conn = psycopg2.connect(_dsn(dsn))
        else:
            conn.rollback()
        idle.append(conn)

    def worker(n: int) -> None:
        for i in range(queries):
            conn = take()
            try:
                token = f"{n}-{i}"
                cur = conn.cursor()
                cur.execute("SELECT %s, pg_sleep(%s)", (token, rng.choice((0, 0, 0.001, 0.002))))
                if cur.fetchone()[0] != token:
                    stats["mixed"] += 1
                else:
                    stats["ok"] += 1
            except psycopg2.Error as exc:
                stats["errors"].append(repr(exc))
            finally:
                give(conn)

    tasks = [sched.spawn(worker, n) for n in range(workers)]
    victims = rng.sample(tasks, int(workers * killed))
    with heartbeat(sched) as hb:
        start = time.perf_counter()
        for task in victims:
            sched.sleep(rng.uniform(0, 0.05))
            if not task.dead:
                stats["killed"] += 1
                sched.kill(task)
        results = sched.join(tasks)
        wall = time.perf_counter() - start
    watcher = Watcher(sched, dsn)
    watcher.cur.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
        (APP,),
    )
    stats["active_after"] = int(watcher.cur.fetchone()[0])
    # every pooled connection works
    works = 0
    for conn in idle:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        works += cur.fetchone()[0]
        conn.close()
    stats["pool_works"] = works
    stats["pool_size"] = len(idle)
    stats["exceptions"] = sorted(
        {type(r).__name__ for r in results if isinstance(r, BaseException)}
    )
    stats["wall"] = wall
    stats["max_gap"] = max(hb.gaps, default=0.0)
    stats["leaked"] = watcher.leaked()
    return stats


def timeout_storm(
    sched: Scheduler, dsn: str, workers: int = 20, queries: int = 100
) -> dict[str, Any]:
    """``workers`` greenlets x ``queries`` queries of 0-20 ms, each under a random 0-8 ms
    timeout: the scheduler's (connection closed, replaced) or psycogreen's (cancelled, kept).
    """
    from psycogreen import core

    _patch(sched)
    rng = random.Random(4321)
    seen: dict[str, int] = {}
    unexpected: list[str] = []
    mixed = 0

    def worker(n: int) -> None:  # noqa: PLR0912
        nonlocal mixed
        conn = psycopg2.connect(_dsn(dsn))
        for i in range(queries):
            seconds = max(rng.uniform(0, 0.008), 1e-4)
            scheduler_timeout = i % 2 == 0
            token = f"{n}-{i}"
            try:
                if conn.closed:
                    conn = psycopg2.connect(_dsn(dsn))
                cur = conn.cursor()
                if scheduler_timeout:
                    with sched.timeout(seconds):
                        cur.execute("SELECT %s, pg_sleep(%s)", (token, rng.uniform(0, 0.02)))
                        row = cur.fetchone()
                else:
                    with core.timeout(seconds):
                        cur.execute("SELECT %s, pg_sleep(%s)", (token, rng.uniform(0, 0.02)))
                        row = cur.fetchone()
                if row[0] != token:
                    mixed += 1
                kind = "ok"
            except sched.Timeout:
                kind = "Timeout"
                if not conn.closed:
                    # the Timeout fired outside the callback (fetchone is local): still usable
                    conn.rollback()
            except psycopg2.errors.QueryCanceled:
                kind = "QueryCanceled"
                conn.rollback()
            except psycopg2.OperationalError as exc:
                # a psycogreen deadline during the reconnect
                kind = "OperationalError"
                if "connection attempt timed out" not in str(exc):
                    unexpected.append(repr(exc))
            except BaseException as exc:
                kind = type(exc).__name__
                unexpected.append(repr(exc))
            if kind == "ok" and not conn.closed:
                conn.rollback()
            seen[kind] = seen.get(kind, 0) + 1
        if not conn.closed:
            conn.close()

    with heartbeat(sched) as hb:
        sched.join([sched.spawn(worker, n) for n in range(workers)])
    return {
        "seen": seen,
        "unexpected": unexpected[:20],
        "mixed": mixed,
        "max_gap": max(hb.gaps, default=0.0),
        "leaked": Watcher(sched, dsn).leaked(),
    }


# --- a black-holed server -------------------------------------------------------------------


def blackhole(
    sched: Scheduler, dsn: str, how: str = "timeout", cancel_timeout: float = 0.5, repeat: int = 3
) -> dict[str, Any]:
    """The server stops answering mid-query (a frozen proxy); the cancel is black-holed too."""
    from psycogreen import core

    _patch(sched)
    core.set_cancel_timeout(cancel_timeout)
    watcher = Watcher(sched, dsn)
    with Proxy(*_server(dsn)) as proxy:
        runs = [_blackhole_once(sched, dsn, watcher, proxy, how) for _ in range(repeat)]
    return {"runs": runs, **_summary(runs), "leaked": watcher.leaked()}


def cancel_blackholed(sched: Scheduler, dsn: str, cancel_timeout: float = 0.5) -> dict[str, Any]:
    """conn.cancel() to a server that does not answer: it gives up at the cancel timeout while
    the hub keeps ticking; once the server answers again, it cancels the query."""
    from psycogreen import core

    _patch(sched)
    core.set_cancel_timeout(cancel_timeout)
    watcher = Watcher(sched, dsn)
    out: dict[str, Any] = {}
    with Proxy(*_server(dsn)) as proxy:
        conn = psycopg2.connect(_dsn(dsn, proxy.port))
        pid = conn.get_backend_pid()
        state: dict[str, Any] = {}

        task = _spawn_sleeper(sched, conn, state, 10)
        sched.sleep(0.1)
        proxy.freeze()
        with heartbeat(sched, 0.005) as hb:
            start = time.perf_counter()
            try:
                conn.cancel()
            except psycopg2.OperationalError as exc:
                out["frozen"] = [type(exc).__name__, str(exc)]
            out["frozen_elapsed"] = time.perf_counter() - start
        out["max_gap"] = max(hb.gaps, default=0.0)
        proxy.thaw()
        start = time.perf_counter()
        conn.cancel()
        sched.join([task])
        out["error"] = state.get("error")
        out["delay"] = state["at"] - start
        out["closed"] = conn.closed
        conn.rollback()
        cur = conn.cursor()
        cur.execute("SELECT 7")
        out["after"] = cur.fetchone()[0]
        conn.close()
        out["backend_gone"] = watcher.gone(pid)
    out["leaked"] = watcher.leaked()
    return out


def cancel_from_the_loop(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """conn.cancel() run by the hub itself (a loop callback, as a signal handler may be): the
    hub cannot wait on itself, so psycopg2's blocking cancel is used, and it works."""
    _patch(sched)
    conn = psycopg2.connect(_dsn(dsn))
    state: dict[str, Any] = {}

    def in_the_loop() -> None:
        from greenlet import getcurrent

        state["in_hub"] = getcurrent() is hub_greenlet()
        state["start"] = time.perf_counter()
        try:
            conn.cancel()
        except BaseException as exc:
            state["cancel_error"] = repr(exc)

    if sched.name == "gevent":
        import gevent

        def hub_greenlet() -> Any:
            return gevent.get_hub()

        def call_in_loop() -> None:
            gevent.get_hub().loop.run_callback(in_the_loop)
    else:
        from eventlet import hubs

        def hub_greenlet() -> Any:
            return hubs.get_hub().greenlet

        def call_in_loop() -> None:
            hubs.get_hub().schedule_call_global(0, in_the_loop)

    task = _spawn_sleeper(sched, conn, state, 5)
    sched.sleep(0.1)
    call_in_loop()
    sched.join([task])
    out = {
        "in_hub": state.get("in_hub"),
        "cancel_error": state.get("cancel_error"),
        "error": state.get("error"),
        "delay": state["at"] - state["start"],
        "closed": conn.closed,
    }
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 9")
    out["after"] = cur.fetchone()[0]
    conn.close()
    return out


def _blackhole_once(
    sched: Scheduler, dsn: str, watcher: Watcher, proxy: Proxy, how: str
) -> dict[str, Any]:
    from psycogreen import core

    out: dict[str, Any] = {}
    conn = psycopg2.connect(_dsn(dsn, proxy.port))
    pid = conn.get_backend_pid()
    cur = conn.cursor()
    cur.execute("SELECT 1")
    proxy.freeze()
    limit = 1.0
    marks: dict[str, Any] = {}

    def victim() -> None:
        try:
            if how == "timeout":
                with sched.timeout(limit) as t:
                    marks["t"] = t
                    cur.execute("SELECT 2")
            elif how == "deadline":
                with core.timeout(limit):
                    cur.execute("SELECT 2")
            else:
                cur.execute("SELECT 2")
        except BaseException as exc:
            marks["exc"] = exc
            marks["raised"] = time.perf_counter()
            if how == "kill":
                raise

    with heartbeat(sched, 0.005) as hb:
        start = time.perf_counter()
        task = sched.spawn(victim)
        if how == "kill":
            sched.sleep(limit)
            sched.kill(task)
        sched.join([task])
    exc = marks.get("exc")
    out["exc"] = type(exc).__name__ if exc is not None else None
    out["message"] = str(exc) if exc is not None else None
    out["same_timeout"] = exc is marks.get("t") if how == "timeout" else None
    out["elapsed"] = marks.get("raised", 0.0) - start
    out["closed"] = conn.closed
    out["max_gap"] = max(hb.gaps, default=0.0)
    out["task_dead"] = bool(task.dead)
    proxy.thaw()
    out["backend_gone"] = watcher.gone(pid)
    start = time.perf_counter()
    while proxy.count() and time.perf_counter() - start < 3:
        sched.sleep(0.02)
    out["proxy_upstreams"] = proxy.count()
    return out
