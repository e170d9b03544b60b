# SPDX-License-Identifier: BSD-3-Clause
"""COPY scenarios, run in a subprocess patched for the backend under test (see ``green.py``).

Tables are created by the test (or here, named after the process) and dropped by the test.
Each scenario returns JSON-able facts; byte-for-byte comparisons against psycopg2's own COPY
happen in the (unpatched) test process.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from psycogreen import core
from tests.support.green import Scheduler, ctrl_c_after

FORMATS = {"text": "", "csv": "(FORMAT csv)", "binary": "(FORMAT binary)"}


class Cursor(core.CopyCursorMixin, psycopg2.extensions.cursor):
    """A cursor whose copy_* methods work while psycopg2 is patched."""


def _patch(sched: Scheduler) -> Any:
    backend = importlib.import_module(f"psycogreen.{sched.name}")
    backend.patch_psycopg()
    return backend


def _connect(dsn: str, *, autocommit: bool = False) -> Any:
    conn = psycopg2.connect(dsn, cursor_factory=Cursor)
    conn.autocommit = autocommit
    return conn


def _copied(cur: Any, result: object) -> int:
    """The rows a cursor's copy_* method copied: like psycopg2's, it returns None and sets
    cursor.rowcount."""
    assert result is None, result
    return int(cur.rowcount)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class GeneratorSource:
    """A file-like source fed by a generator, handing out whatever piece is next."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.reads = 0

    def read(self, size: int = -1) -> bytes:  # noqa: ARG002 (any piece will do)
        self.reads += 1
        return next(self.chunks, b"")


def _rows(n: int, start: int = 1) -> Iterator[bytes]:
    for i in range(start, start + n):
        yield f"{i}\tname {i}\t{i * 1.5}\n".encode()


class SlowSink:
    """A sink that lets the scheduler run (and time pass) on every write."""

    def __init__(self, sched: Scheduler, pause: float = 0.001) -> None:
        self.sched = sched
        self.pause = pause
        self.buf = io.BytesIO()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.buf.write(data)
        self.sched.sleep(self.pause)


class Heartbeat:
    """A task ticking every 10 ms, recording the worst gap between ticks two ways.

    ``wall``: the wall-clock delay past the 10 ms, which also counts time the OS gave other
    processes (the test machine is shared). ``cpu``: the CPU time this thread spent between
    two ticks: a COPY that kept the scheduler from running for 60 ms used 60 ms of it, while
    a process preempted by the OS used none.
    """

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.wall = 0.0
        self.cpu = 0.0
        self.running = True
        self.task = sched.spawn(self._run)

    def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while self.running:
            self.sched.sleep(0.01)
            now, now_cpu = time.perf_counter(), time.thread_time()
            self.wall = max(self.wall, now - last - 0.01)
            self.cpu = max(self.cpu, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    def __enter__(self) -> Heartbeat:  # noqa: PYI034 (no typing_extensions here)
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.sched.join([self.task])


def _state(watcher: Any, pid: int, *, settle: float = 3.0) -> str:
    """The backend's state, once it is no longer active (or ``settle`` passed)."""
    cur = watcher.cursor()
    start = time.perf_counter()
    state = "active"
    while time.perf_counter() - start < settle:
        cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cur.fetchone()
        state = row[0] if row else "gone"
        if state != "active":
            break
        time.sleep(0.005)
    return state


# --------------------------------------------------------------------------------------------


def roundtrip(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """COPY TO and FROM in every format, through the usual method names."""
    _patch(sched)
    conn = _connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}
    for fmt, opts in FORMATS.items():
        sink = io.BytesIO()
        n_to = _copied(
            cur, cur.copy_expert(f"COPY (SELECT * FROM {table} ORDER BY a) TO STDOUT {opts}", sink)
        )
        data = sink.getvalue()
        cur.execute(f"CREATE TABLE {table}_{fmt} (LIKE {table})")
        n_from = _copied(
            cur,
            cur.copy_expert(f"COPY {table}_{fmt} FROM STDIN {opts}", io.BytesIO(data), size=65536),
        )
        out[fmt] = {"to": n_to, "from": n_from, "md5": _md5(data), "rowcount": cur.rowcount}
    conn.commit()
    # COPY TO through PQgetCopyData, for a libpq without PQgetlineAsync
    from psycogreen.core import _libpq

    lib = _libpq.load_copy()
    getline, lib.fast_PQgetlineAsync = lib.fast_PQgetlineAsync, None
    try:
        for fmt, opts in FORMATS.items():
            sink = io.BytesIO()
            cur.copy_expert(f"COPY (SELECT * FROM {table} ORDER BY a) TO STDOUT {opts}", sink)
            out[fmt]["getcopydata_md5"] = _md5(sink.getvalue())
    finally:
        lib.fast_PQgetlineAsync = getline
    # A text sink gets str; a str source is encoded in the connection's encoding.
    text_sink = io.StringIO()
    out["text_sink_rows"] = _copied(cur, cur.copy_to(text_sink, table))
    text = text_sink.getvalue()
    out["text_sink_md5"] = _md5(text.encode())
    cur.execute(f"CREATE TABLE {table}_str (LIKE {table})")
    out["str_source_rows"] = _copied(cur, cur.copy_from(io.StringIO(text), f"{table}_str"))
    # copy_from/copy_to with sep, null and columns; a generator-fed source.
    cur.execute(f"CREATE TABLE {table}_gen (a int, b text, c numeric)")
    pieces = (piece for row in _rows(5000) for piece in (row[:3], row[3:]))
    source = GeneratorSource(pieces)
    out["gen_rows"] = _copied(cur, cur.copy_from(source, f"{table}_gen", columns=("a", "b", "c")))
    out["gen_reads"] = source.reads
    sink = io.BytesIO()
    out["gen_to_rows"] = _copied(
        cur, cur.copy_to(sink, f"{table}_gen", sep="|", null="NULL", columns=["a", "b"])
    )
    out["gen_to_head"] = sink.getvalue()[:30].decode()
    # a psycopg2.sql composable
    from psycopg2 import sql

    sink = io.BytesIO()
    query = sql.SQL("COPY (SELECT count(*) FROM {}) TO STDOUT").format(
        sql.Identifier(f"{table}_gen")
    )
    cur.copy_expert(query, sink)
    out["composable"] = sink.getvalue().decode()
    conn.commit()
    return out


def big(sched: Scheduler, dsn: str, table: str, rows: int = 1_000_000) -> dict[str, Any]:
    """1M rows each way, text and binary, with a heartbeat ticking every 10 ms."""
    _patch(sched)
    conn = _connect(dsn, autocommit=True)
    cur = conn.cursor()
    cur.execute(
        f"CREATE TABLE {table} AS SELECT g AS a, md5(g::text) AS b, g * 1.5 AS c "
        "FROM generate_series(1, %s) g",
        (rows,),
    )
    out: dict[str, Any] = {}
    for fmt in ("text", "binary"):
        opts = FORMATS[fmt]
        sink = io.BytesIO()
        with Heartbeat(sched) as hb_to:
            start = time.perf_counter()
            n_to = _copied(cur, cur.copy_expert(f"COPY {table} TO STDOUT {opts}", sink))
            to_wall = time.perf_counter() - start
        data = sink.getvalue()
        cur.execute(f"CREATE TABLE {table}_{fmt} (LIKE {table})")
        with Heartbeat(sched) as hb_from:
            start = time.perf_counter()
            n_from = _copied(
                cur, cur.copy_expert(f"COPY {table}_{fmt} FROM STDIN {opts}", io.BytesIO(data))
            )
            from_wall = time.perf_counter() - start
        cur.execute(
            f"SELECT count(*), sum(a), md5(string_agg(b || c, ',' ORDER BY a)) FROM {table}_{fmt}"
        )
        check = [str(v) for v in cur.fetchone()]
        out[fmt] = {
            "bytes": len(data),
            "to": n_to,
            "from": n_from,
            "to_gap": hb_to.wall,
            "to_cpu_gap": hb_to.cpu,
            "from_gap": hb_from.wall,
            "from_cpu_gap": hb_from.cpu,
            "to_wall": to_wall,
            "from_wall": from_wall,
            "check": check,
        }
    cur.execute(f"SELECT count(*), sum(a), md5(string_agg(b || c, ',' ORDER BY a)) FROM {table}")
    out["expected"] = [str(v) for v in cur.fetchone()]
    return out


def transactions(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """COPY inside psycopg2's transaction; set_session options; autocommit."""
    _patch(sched)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    wcur = watcher.cursor()

    def count() -> int:
        wcur.execute(f"SELECT count(*) FROM {table}")
        return int(wcur.fetchone()[0])

    conn = _connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}
    out["copied"] = _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(1000))), table))
    out["status_after_copy"] = conn.status == psycopg2.extensions.STATUS_BEGIN
    out["visible_before_commit"] = count()
    conn.rollback()
    out["after_rollback"] = count()
    cur.copy_from(io.BytesIO(b"".join(_rows(1000))), table)
    conn.commit()
    out["after_commit"] = count()
    # set_session: the BEGIN psycopg2 sends carries the options
    conn.set_session(isolation_level="SERIALIZABLE")
    cur.copy_from(io.BytesIO(b"".join(_rows(10, 5000))), table)
    cur.execute("SHOW transaction_isolation")
    out["isolation"] = cur.fetchone()[0]
    conn.rollback()
    conn.set_session(isolation_level="DEFAULT", readonly=True)
    try:
        cur.copy_from(io.BytesIO(b"".join(_rows(10, 6000))), table)
    except psycopg2.Error as exc:
        out["readonly"] = [type(exc).__name__, exc.pgcode]
    conn.rollback()
    conn.set_session(readonly=False)
    # a transaction begun by a statement before the COPY: the COPY joins it
    cur.execute(f"INSERT INTO {table} VALUES (-1, 'before', 0)")
    cur.copy_from(io.BytesIO(b"".join(_rows(10, 7000))), table)
    conn.rollback()
    out["joined_rollback"] = count()
    # autocommit: committed at once
    conn.autocommit = True
    cur.copy_from(io.BytesIO(b"".join(_rows(10, 8000))), table)
    out["autocommit"] = count()
    # COPY TO in a transaction sees the transaction's own rows
    conn.autocommit = False
    cur.execute(f"DELETE FROM {table}")
    sink = io.BytesIO()
    out["to_in_tx"] = _copied(cur, cur.copy_to(sink, table))
    conn.rollback()
    return out


def interrupted(  # noqa: PLR0917
    sched: Scheduler, dsn: str, table: str, direction: str, how: str, autocommit: bool
) -> dict[str, Any]:
    """A Timeout, a kill or a psycogreen timeout mid-COPY."""
    _patch(sched)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    wcur = watcher.cursor()
    conn = _connect(dsn, autocommit=autocommit)
    pid = conn.get_backend_pid()
    cur = conn.cursor()
    if direction == "from":
        # endless enough: 10M rows, produced as fast as the COPY takes them
        source = GeneratorSource(_rows(10_000_000))

        def run() -> Any:
            return cur.copy_from(source, table)

    else:
        sink = SlowSink(sched)

        def run() -> Any:
            return cur.copy_expert(f"COPY {table} TO STDOUT", sink)

    out: dict[str, Any] = {}

    def victim() -> str:
        try:
            if how == "timeout":
                with sched.timeout(0.3):
                    run()
            elif how == "psycogreen":
                with core.timeout(0.3):
                    run()
            elif how == "set_timeout":
                core.set_timeout(conn, 0.3)
                run()
            else:
                run()
        except sched.Timeout:
            return "Timeout"
        except psycopg2.Error as exc:
            return f"{type(exc).__name__}:{exc.pgcode}"
        return "finished"

    start = time.perf_counter()
    task = sched.spawn(victim)
    if how == "kill":
        sched.sleep(0.3)
        sched.kill(task)
    result = sched.join([task])[0]
    out["elapsed"] = time.perf_counter() - start
    out["result"] = type(result).__name__ if isinstance(result, BaseException) else result
    out["closed"] = conn.closed
    out["server_state"] = _state(watcher, pid)
    if not conn.closed:
        conn.rollback()
        out["server_state_after_rollback"] = _state(watcher, pid)
        cur.execute("SELECT 42")
        out["after"] = cur.fetchone()[0]
    if direction == "from":
        wcur.execute(f"SELECT count(*) FROM {table}")
        out["rows_committed"] = wcur.fetchone()[0]
        out["source_reads"] = source.reads
    else:
        out["sink_writes"] = sink.writes
    return out


def server_errors(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Errors of the server mid-COPY arrive as psycopg2.errors subclasses."""
    _patch(sched)
    conn = _connect(dsn)
    cur = conn.cursor()
    out: dict[str, Any] = {}

    def attempt(name: str, func: Any) -> None:
        try:
            func()
            out[name] = ["no error"]
        except psycopg2.Error as exc:
            out[name] = [type(exc).__name__, exc.pgcode, str(exc), exc.pgerror, conn.closed]
        conn.rollback()
        cur.execute("SELECT 1")
        out[name].append(cur.fetchone()[0])
        conn.rollback()

    good = b"".join(_rows(5000))
    bad = good + b"oops\tx\t1\n" + b"".join(_rows(10, 6000))
    attempt("bad_row", lambda: cur.copy_from(io.BytesIO(bad), table))
    dup = b"".join(_rows(3)) + b"".join(_rows(3))
    attempt("unique", lambda: cur.copy_from(io.BytesIO(dup), table))
    sink = io.BytesIO()
    attempt(
        "to_mid_stream",
        lambda: cur.copy_expert(
            "COPY (SELECT g, 1 / (g - 30000) FROM generate_series(1, 40000) g) TO STDOUT", sink
        ),
    )
    out["to_rows_before_error"] = sink.getvalue().count(b"\n")
    attempt("syntax", lambda: cur.copy_expert("COPY no_such_table FROM STDIN", io.BytesIO(b"")))
    attempt("in_failed_tx", lambda: (_fail(cur), cur.copy_from(io.BytesIO(good), table)))

    # a Python exception from the source: CopyFail with psycopg2's message, the server's
    # QueryCanceled raised (the source's exception as its cause), conn kept
    def broken() -> Iterator[bytes]:
        yield from _rows(100)
        message = "source broke"
        raise ValueError(message)

    try:
        cur.copy_from(GeneratorSource(broken()), table)
    except psycopg2.errors.QueryCanceled as exc:
        out["source_error"] = [str(exc).splitlines()[0], repr(exc.__cause__), conn.closed]
    conn.rollback()
    cur.execute(f"SELECT count(*) FROM {table}")
    out["rows_at_end"] = cur.fetchone()[0]
    return out


def _fail(cur: Any) -> None:
    try:
        cur.execute("SELECT 1/0")
    except psycopg2.errors.DivisionByZero:
        pass


def _connection(sched: Scheduler, dsn: str, *, guarded: bool) -> Any:
    """A connection of psycopg2.connect() once patched (guarded), or of psycopg2's own class.

    The latter is made with the class itself: psycopg2.connect() may be patched before the
    scenario starts (psycogreen-gevent's plugin patches at monkey.patch_all()).
    """
    _patch(sched)
    if guarded:
        return _connect(dsn)
    conn = psycopg2.extensions.connection(dsn)
    conn.cursor_factory = Cursor
    return conn


def closed_mid_copy(
    sched: Scheduler, dsn: str, table: str, direction: str, guarded: bool
) -> dict[str, Any]:
    """Another task closes the connection during the COPY: no crash, ever.

    An unguarded connection closes and the COPY gets InterfaceError; a guarded one refuses
    the close with ConnectionBusyError and the COPY completes.
    """
    conn = _connection(sched, dsn, guarded=guarded)
    cur = conn.cursor()
    if direction == "from":

        def slow_rows() -> Iterator[bytes]:
            for row in _rows(100_000):
                sched.sleep(0.001)
                yield row

        def run() -> Any:
            return cur.copy_from(GeneratorSource(slow_rows()), table)

    elif direction == "to_waiting":
        # rows trickle from the server: the COPY waits on the socket when the close comes

        def run() -> Any:
            return cur.copy_expert(
                "COPY (SELECT g, pg_sleep(0.002) FROM generate_series(1, 2000) g) TO STDOUT",
                io.BytesIO(),
            )

    else:

        def run() -> Any:
            return cur.copy_expert(f"COPY {table} TO STDOUT", SlowSink(sched))

    def victim() -> str:
        try:
            run()
        except psycopg2.InterfaceError as exc:
            return f"InterfaceError:{exc}"
        except Exception as exc:
            return f"{type(exc).__name__}:{exc}"
        return "finished"

    task = sched.spawn(victim)
    sched.sleep(0.2)
    start = time.perf_counter()
    try:
        conn.close()
        closer = "closed"
    except psycopg2.Error as exc:
        closer = type(exc).__name__
    result = sched.join([task])[0]
    if not conn.closed:
        cur = conn.cursor()
        cur.execute("SELECT 8")
        closer += f":{cur.fetchone()[0]}"
    # the process is alive and psycopg2 still works
    other = psycopg2.connect(dsn)
    ocur = other.cursor()
    ocur.execute("SELECT 7")
    return {
        "result": result,
        "closer": closer,
        "closed": conn.closed,
        "after_close": time.perf_counter() - start,
        "other": ocur.fetchone()[0],
    }


def same_connection(sched: Scheduler, dsn: str, table: str, guarded: bool) -> dict[str, Any]:
    """Another task's query on the connection during a COPY: a clear error; COPY completes."""
    conn = _connection(sched, dsn, guarded=guarded)
    sink = SlowSink(sched)
    other_cursor = conn.cursor()

    def copy() -> Any:
        return core.copy_expert(conn.cursor(), f"COPY {table} TO STDOUT", sink)

    def intruder() -> list[str]:
        sched.sleep(0.05)
        errors = []
        for attempt in (
            lambda: other_cursor.execute("SELECT 1"),
            conn.commit,
            lambda: core.copy_expert(other_cursor, "COPY (SELECT 1) TO STDOUT", io.BytesIO()),
        ):
            try:
                attempt()
                errors.append("no error")
            except psycopg2.Error as exc:
                errors.append(f"{type(exc).__name__}:{exc}")
        return errors

    copied, intruded = sched.join([sched.spawn(copy), sched.spawn(intruder)])
    conn.rollback()
    cur = conn.cursor()
    cur.execute(f"SELECT count(*) FROM {table}")
    return {
        "copied": copied if isinstance(copied, int) else repr(copied),
        "intruder": intruded,
        "expected": cur.fetchone()[0],
        "bytes_ok": sink.buf.getvalue().count(b"\n"),
        "closed": conn.closed,
        "guarded": type(conn).__name__,
    }


def refusals(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """Where COPY cannot be cooperative, a clear error, never a silent block."""
    from psycogreen.core import _libpq

    backend = _patch(sched)
    conn = _connect(dsn, autocommit=True)
    cur = conn.cursor()
    out: dict[str, Any] = {}

    def attempt(name: str) -> None:
        try:
            cur.copy_expert("COPY (SELECT 1) TO STDOUT", io.BytesIO())
            out[name] = "no error"
        except core.CopyUnavailableError as exc:
            out[name] = str(exc)

    # a wait callback psycogreen does not know
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    attempt("foreign")

    # a backend whose record refuses COPY (uWSGI's does: tests/uwsgi checks its reason)
    from psycogreen.core.backend import Backend, register_backend

    refusing = Backend(
        name="refusing",
        wait_read=psycopg2.extras.wait_select,  # never called: COPY is refused first
        wait_write=psycopg2.extras.wait_select,
        copy_refusal="its waits cannot hand control to other tasks every few milliseconds",
    )
    psycopg2.extensions.set_wait_callback(register_backend(refusing))
    attempt("refusing")
    core.unpatch()
    backend.patch_psycopg()
    # a libpq without a function COPY needs
    _libpq._load_copy.cache_clear()
    _libpq._COPY["PQnoSuchFunction"] = (None, [])
    attempt("missing_symbol")
    del _libpq._COPY["PQnoSuchFunction"]
    _libpq._load_copy.cache_clear()
    sink = io.BytesIO()
    cur.copy_expert("COPY (SELECT 1) TO STDOUT", sink)
    out["works_again"] = sink.getvalue().decode()
    # a named cursor, a closed cursor: psycopg2's own errors
    try:
        core.copy_expert(conn.cursor("named"), "COPY (SELECT 1) TO STDOUT", io.BytesIO())
    except psycopg2.ProgrammingError as exc:
        out["named"] = str(exc)
    closed = conn.cursor()
    closed.close()
    try:
        core.copy_expert(closed, "COPY (SELECT 1) TO STDOUT", io.BytesIO())
    except psycopg2.InterfaceError as exc:
        out["closed_cursor"] = str(exc)
    return out


def without_callback_and_old_connections(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """No callback: psycopg2's own COPY. A connection made before patching: blocking mode kept."""
    from psycogreen.core import _libpq

    out: dict[str, Any] = {}
    psycopg2.extensions.set_wait_callback(None)  # eventlet.monkey_patch() installs its own
    before = psycopg2.connect(dsn, cursor_factory=Cursor)
    before.autocommit = True
    cur = before.cursor()
    out["native_from"] = _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(100))), table))
    out["native_core_to"] = core.copy_expert(cur, f"COPY {table} TO STDOUT", io.BytesIO())
    _patch(sched)
    lib = _libpq.load_copy()
    out["nonblocking_before"] = lib.PQisnonblocking(before.pgconn_ptr)
    # A connection psycopg2.connect() made before patching is not guarded: its cursors' copy_*
    # methods run the COPY in core, which leaves cursor.rowcount alone.
    sink = io.BytesIO()
    assert cur.copy_expert(f"COPY {table} TO STDOUT", sink) is None
    out["green_to"] = sink.getvalue().count(b"\n")
    out["green_from"] = core.copy_from(cur, io.BytesIO(b"".join(_rows(100, 1000))), table)
    out["nonblocking_after"] = lib.PQisnonblocking(before.pgconn_ptr)
    cur.execute(f"SELECT count(*) FROM {table}")
    out["count"] = cur.fetchone()[0]
    return out


def by_name(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Plain psycopg2.connect() once patched: copy_* work by name, with any cursor class."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    out: dict[str, Any] = {"cursor_class": [c.__name__ for c in type(conn.cursor()).__mro__]}
    for name, factory in (
        ("default", None),
        ("dict", psycopg2.extras.DictCursor),
        ("realdict", psycopg2.extras.RealDictCursor),
    ):
        cur = conn.cursor(cursor_factory=factory)
        rows = _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(10, 100 * len(out)))), table))
        sink = io.BytesIO()
        to_rows = _copied(cur, cur.copy_to(sink, table))
        expert = _copied(cur, cur.copy_expert(f"COPY {table} TO STDOUT", io.BytesIO()))
        out[name] = [rows, to_rows, expert]
    conn.commit()
    return out


def django_raw(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Django's connection (psycopg2 backend): cursor.copy_* by name, through its wrapper."""
    _patch(sched)
    import django
    from django.conf import settings

    params = dict(item.split("=", 1) for item in dsn.split())
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": params.get("dbname", "postgres"),
                "USER": params.get("user", ""),
                "HOST": params.get("host", ""),
                "PORT": params.get("port", ""),
            }
        },
        USE_TZ=True,
    )
    django.setup()
    from django.db import connection, transaction

    out: dict[str, Any] = {}
    with transaction.atomic(), connection.cursor() as cur:
        out["from"] = _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(1000))), table))
        sink = io.BytesIO()
        out["expert"] = _copied(cur, cur.copy_expert(f"COPY {table} TO STDOUT", sink))
        out["bytes"] = len(sink.getvalue())
    out["psycopg2"] = isinstance(connection.connection, psycopg2.extensions.connection)
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        out["count"] = cur.fetchone()[0]
    return out


def sqlalchemy_raw(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """SQLAlchemy's raw_connection(): cursor.copy_* by name."""
    _patch(sched)
    import sqlalchemy

    params = dict(item.split("=", 1) for item in dsn.split())
    url = sqlalchemy.URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        host=params.get("host"),
        port=int(params["port"]) if "port" in params else None,
        database=params.get("dbname"),
    )
    engine = sqlalchemy.create_engine(url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        out: dict[str, Any] = {
            "from": _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(1000))), table))
        }
        sink = io.BytesIO()
        out["to"] = _copied(cur, cur.copy_to(sink, table))
        raw.commit()
        cur.execute(f"SELECT count(*) FROM {table}")
        out["count"] = cur.fetchone()[0]
        out["bytes"] = len(sink.getvalue())
    finally:
        raw.close()
    engine.dispose()
    return out


def unreachable(sched: Scheduler, dsn: str, table: str, direction: str) -> dict[str, Any]:
    """The server stops answering mid-COPY, then a Timeout: the connection ends closed."""
    from tests.support.proxy import Proxy

    _patch(sched)
    core.set_cancel_timeout(0.5)
    params = dict(item.split("=", 1) for item in dsn.split())
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    wcur = watcher.cursor()
    out: dict[str, Any] = {}
    with Proxy(params.get("host", "127.0.0.1"), int(params.get("port", "5432"))) as proxy:
        proxied = " ".join(
            f"{k}={v}" for k, v in {**params, "host": "127.0.0.1", "port": proxy.port}.items()
        )
        conn = psycopg2.connect(proxied, cursor_factory=Cursor)
        conn.autocommit = True
        pid = conn.get_backend_pid()
        cur = conn.cursor()
        if direction == "from":
            source = GeneratorSource(_rows(10_000_000))

            def run() -> Any:
                return cur.copy_from(source, table)

        else:
            # rows trickle for 5 s: the COPY is waiting on the network when the server stops
            query = "COPY (SELECT g, pg_sleep(0.001) FROM generate_series(1, 5000) g) TO STDOUT"

            def run() -> Any:
                return cur.copy_expert(query, io.BytesIO())

        def victim() -> str:
            try:
                with sched.timeout(0.6):
                    run()
            except sched.Timeout:
                return "Timeout"
            return "finished"

        start = time.perf_counter()
        task = sched.spawn(victim)
        sched.sleep(0.2)
        proxy.freeze()
        result = sched.join([task])[0]
        out["elapsed"] = time.perf_counter() - start
        out["result"] = type(result).__name__ if isinstance(result, BaseException) else result
        out["closed"] = conn.closed
        proxy.thaw()
        out["server_state"] = _state(watcher, pid)
        deadline = time.perf_counter() + 5
        while out["server_state"] != "gone" and time.perf_counter() < deadline:
            time.sleep(0.05)
            out["server_state"] = _state(watcher, pid)
    if direction == "from":
        wcur.execute(f"SELECT count(*) FROM {table}")
        out["rows_committed"] = wcur.fetchone()[0]
    return out


def blocking_copy(sched: Scheduler, dsn: str, table: str) -> dict[str, Any]:
    """Core's scheduler-free callback: COPY works; Ctrl-C stops it on the server."""
    core.patch_psycopg("blocking")
    conn = _connect(dsn, autocommit=True)
    cur = conn.cursor()
    out: dict[str, Any] = {
        "from": _copied(cur, cur.copy_from(io.BytesIO(b"".join(_rows(1000))), table))
    }
    sink = io.BytesIO()
    out["to"] = _copied(cur, cur.copy_to(sink, table))
    out["bytes"] = len(sink.getvalue())
    cur.execute(f"TRUNCATE {table}")
    ctrl_c_after(0.3)
    start = time.perf_counter()
    try:
        cur.copy_from(GeneratorSource(_rows(10_000_000)), table)
    except KeyboardInterrupt:
        out["interrupted"] = "KeyboardInterrupt"
    out["elapsed"] = time.perf_counter() - start
    out["closed"] = conn.closed
    cur.execute(f"SELECT count(*) FROM {table}")
    out["rows_committed"] = cur.fetchone()[0]
    return out


def eventlet_own_callback(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """eventlet.monkey_patch() installs eventlet's own callback: COPY recognises it."""
    import sys

    out: dict[str, Any] = {
        "callback": getattr(psycopg2.extensions.get_wait_callback(), "__module__", None),
        "backend_imported_before": "psycogreen.eventlet" in sys.modules,
    }
    conn = psycopg2.connect(dsn)
    sink = io.BytesIO()
    out["rows"] = core.copy_expert(
        conn.cursor(), "COPY (SELECT generate_series(1, 100)) TO STDOUT", sink
    )
    out["backend_imported_after"] = "psycogreen.eventlet" in sys.modules
    return out


def terminated(sched: Scheduler, dsn: str, table: str, direction: str) -> dict[str, Any]:
    """The server ends the backend mid-COPY: OperationalError, and the connection is closed."""
    _patch(sched)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    conn = _connect(dsn)
    pid = conn.get_backend_pid()
    cur = conn.cursor()

    def killer() -> None:
        sched.sleep(0.2)
        watcher.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))

    def victim() -> str:
        try:
            if direction == "from":
                cur.copy_from(GeneratorSource(_rows(10_000_000)), table)
            else:
                cur.copy_expert(f"COPY {table} TO STDOUT", SlowSink(sched))
        except psycopg2.Error as exc:
            return f"{type(exc).__name__}:{exc.pgcode}"
        return "finished"

    result, _ = sched.join([sched.spawn(victim), sched.spawn(killer)])
    return {"result": result, "closed": conn.closed}
