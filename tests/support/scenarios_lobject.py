# SPDX-License-Identifier: BSD-3-Clause
"""Large-object scenarios, run in a subprocess (``green.py``) patched for the backend under test.

``api`` also runs unpatched (scheduler ``none``), where ``conn.lobject()`` is psycopg2's own: the
test compares the two results, observation by observation.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions

from tests.support.green import Scheduler
from tests.support.scenarios_copy import Heartbeat

MODES = ["", None, "r", "w", "rw", "n", "b", "t", "rb", "wb", "rwb", "nb", "rt", "wt", "rwt"]
BAD_MODES = ["x", "rr", "wr", "rtb", "bw", "tt", "rwx", "nn"]
MiB = 1 << 20


def _patch(sched: Scheduler) -> None:
    if sched.name != "none":
        importlib.import_module(f"psycogreen.{sched.name}").patch_psycopg()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Recorder:
    """Runs steps; records each result, or the exception's type and message."""

    def __init__(self, conn: Any, oids: list[int]) -> None:
        self.conn = conn
        self.oids = oids
        self.paths: list[str] = []
        self.out: dict[str, Any] = {}

    def clean(self, text: str) -> str:
        # Oids, temporary paths and addresses differ from run to run.
        for oid in self.oids:
            text = text.replace(str(oid), "<oid>")
        for path in self.paths:
            text = text.replace(path, "<tmp>")
        return re.sub(r"0x[0-9a-f]+", "<addr>", text)

    def __call__(self, name: str, step: Callable[[], Any], *, rollback: bool = False) -> Any:
        try:
            result = step()
        except Exception as exc:
            self.out[name] = {
                "raised": type(exc).__name__,
                "str": self.clean(str(exc)),
                "pgcode": getattr(exc, "pgcode", None),
                "operational": isinstance(exc, psycopg2.OperationalError),
            }
            if rollback:
                self.conn.rollback()
            return None
        self.out[name] = self.clean(repr(result))
        return result


def api(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """psycopg2's lobject API, every method, mode and error, as a program sees it."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    oids: list[int] = []
    rec = _Recorder(conn, oids)
    out = rec.out
    out["class_is_lobject"] = None

    # create, write, read: bytes, text, partial reads, across the chunk size
    lo = conn.lobject()
    oids.append(lo.oid)
    out["class_is_lobject"] = isinstance(lo, psycopg2.extensions.lobject)
    out["new"] = [lo.mode, lo.closed]
    rnd = random.Random(16)
    data = rnd.randbytes(3 * MiB + 17)
    rec("write_big", lambda: lo.write(data))
    rec("tell_after_write", lo.tell)
    rec("seek_start", lambda: lo.seek(0))
    rec("read_part_text_mode_bytes", lambda: len(lo.read(10)))
    lo.close()
    out["closed_after_close"] = lo.closed
    rb = conn.lobject(lo.oid, "rb")
    got = rb.read()
    out["read_all_md5"] = [len(got), _md5(got) == _md5(data)]
    rb.seek(MiB - 5)
    part = rb.read(MiB + 10)  # spans a chunk boundary
    out["read_span"] = part == data[MiB - 5 : 2 * MiB + 5]
    rb.seek(-7, 2)
    out["read_tail"] = rb.read(100) == data[-7:]
    rec("read_at_end", rb.read)
    rec("read_zero", lambda: rb.read(0))
    rec("seek_cur", lambda: rb.seek(-3, 1))
    rec("seek_past_end", lambda: rb.seek(10 * MiB))
    rec("read_past_end", lambda: rb.read(5))
    rb.close()

    text = conn.lobject()
    oids.append(text.oid)
    rec("write_text", lambda: text.write("some data \u2603"))
    text.close()
    rt = conn.lobject(text.oid, "rt")
    rec("read_text", lambda: (rt.read(4), rt.read()))
    rt.close()
    rw = conn.lobject(text.oid, "rwb")
    rec("truncate_shorter", lambda: rw.truncate(4))
    rec("tell_after_truncate", rw.tell)
    rec("read_truncated", rw.read)
    rec("truncate_longer", lambda: rw.truncate(6))
    rw.seek(0)
    rec("read_extended", rw.read)
    rec("truncate_3gb", lambda: rw.truncate(3 << 30))
    rec("seek_3gb", lambda: rw.seek(3 << 30))
    rec("tell_3gb", rw.tell)
    rec("truncate_default", rw.truncate)
    rw.seek(0)
    rec("read_empty", rw.read)
    rec("write_int", lambda: rw.write(123))
    rec("write_bytearray", lambda: rw.write(bytearray(b"x")))
    rec("write_empty", lambda: rw.write(b""))
    rec("seek_bad_whence", lambda: rw.seek(0, 7), rollback=True)
    conn.rollback()

    # modes, on an existing object and on a new one
    base = conn.lobject()
    oids.append(base.oid)
    base.write(b"0123456789")
    base.close()
    conn.commit()
    for mode in MODES:

        def open_existing(mode: str | None = mode) -> Any:
            obj = conn.lobject(base.oid, mode)
            return [obj.mode, obj.closed, obj.oid == base.oid]

        def open_new(mode: str | None = mode) -> Any:
            obj = conn.lobject(0, mode)
            oids.append(obj.oid)
            return [obj.mode, obj.closed]

        rec(f"mode_{mode!r}", open_existing)
        rec(f"new_mode_{mode!r}", open_new)
    for mode in BAD_MODES:
        rec(f"bad_mode_{mode!r}", lambda mode=mode: conn.lobject(base.oid, mode), rollback=True)
    conn.rollback()
    reader = conn.lobject(base.oid, "r")
    rec("write_read_only", lambda: reader.write(b"x"), rollback=True)
    writer = conn.lobject(base.oid, "w")
    rec("read_write_only", writer.read, rollback=True)
    closed = conn.lobject(base.oid, "n")
    for name, step in {
        "read": lambda: closed.read(1),
        "write": lambda: closed.write(b"x"),
        "seek": lambda: closed.seek(0),
        "tell": closed.tell,
        "truncate": closed.truncate,
    }.items():
        rec(f"closed_{name}", step)
    rec("closed_close", closed.close)
    conn.rollback()

    # transactions: stale after commit, rollback and reset; autocommit
    for end in ("commit", "rollback", "reset"):
        lo = conn.lobject(base.oid, "rb")
        getattr(conn, end)()
        rec(f"read_after_{end}", lambda lo=lo: lo.read(1))
        rec(f"tell_after_{end}", lo.tell)
        rec(f"closed_after_{end}", lambda lo=lo: lo.closed)
        rec(f"close_after_{end}", lo.close)
        conn.rollback()
    conn.autocommit = True
    rec("create_in_autocommit", conn.lobject)
    conn.autocommit = False
    lo = conn.lobject(base.oid)
    conn.commit()
    conn.autocommit = True
    rec("read_in_autocommit", lambda: lo.read(1))
    rec("close_in_autocommit", lo.close)
    conn.autocommit = False

    # errors of the server
    gone = conn.lobject()
    gone_oid = gone.oid
    oids.append(gone_oid)
    rec("unlink", gone.unlink)
    out["closed_after_unlink"] = gone.closed
    rec("open_missing", lambda: conn.lobject(gone_oid), rollback=True)
    out["connection_closed_after_error"] = conn.closed
    rec("create_existing", lambda: conn.lobject(0, "w", base.oid), rollback=True)
    rec("create_with_oid", lambda: conn.lobject(0, "w", gone_oid).oid == gone_oid)
    conn.rollback()
    rec("large_oid", lambda: conn.lobject(0xFFFFFFFE), rollback=True)
    rec("oid_not_int", lambda: conn.lobject("1"), rollback=True)
    rec("mode_not_str", lambda: conn.lobject(base.oid, 1), rollback=True)

    # import and export, client-side files
    with tempfile.TemporaryDirectory() as tmp:
        rec.paths.append(tmp)
        source = os.path.join(tmp, "in.bin")  # noqa: PTH118
        with open(source, "wb") as f:  # noqa: PTH123
            f.write(data[: 2 * MiB + 3])
        imported = conn.lobject(0, "rb", 0, source)
        oids.append(imported.oid)
        out["import"] = [imported.mode, _md5(imported.read()) == _md5(data[: 2 * MiB + 3])]
        target = os.path.join(tmp, "out.bin")  # noqa: PTH118
        rec("export", lambda: imported.export(target))
        with open(target, "rb") as f:  # noqa: PTH123
            out["export_same"] = _md5(f.read()) == _md5(data[: 2 * MiB + 3])
        imported.close()
        rec("export_closed", lambda: imported.export(target))
        conn.commit()
        rec("export_stale", lambda: imported.export(target))
        missing = os.path.join(tmp, "missing", "file")  # noqa: PTH118
        rec("import_missing", lambda: conn.lobject(0, "r", 0, missing), rollback=True)
        rec("export_missing_dir", lambda: imported.export(missing), rollback=True)
        rec("export_missing_object", lambda: gone.export(target), rollback=True)
        rec("import_not_str", lambda: conn.lobject(0, "r", 0, b"x"), rollback=True)

    # a factory class: its overrides run first
    class Logged(psycopg2.extensions.lobject):
        def write(self, data: Any) -> int:
            return 1000 + super().write(data)

    custom = conn.lobject(lobject_factory=Logged)
    oids.append(custom.oid)
    out["factory"] = [isinstance(custom, Logged), custom.write(b"abc")]
    rec("repr", lambda: repr(custom))
    rec("not_a_factory", lambda: conn.lobject(lobject_factory=lambda *_args: object()))
    conn.rollback()

    # the connection closed under the object
    lo = conn.lobject(base.oid)
    conn.close()
    out["closed_after_conn_close"] = lo.closed
    rec("close_after_conn_close", lo.close)
    rec("read_after_conn_close", lambda: lo.read(1))
    cleanup = psycopg2.connect(dsn)
    ccur = cleanup.cursor()
    ccur.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    cleanup.commit()
    cleanup.close()
    return out


def streams(sched: Scheduler, dsn: str, megabytes: int = 32) -> dict[str, Any]:
    """Write then read a large object of ``megabytes`` MiB, a heartbeat ticking every 10 ms."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    data = random.Random(1).randbytes(megabytes * MiB)
    out: dict[str, Any] = {}
    lo = conn.lobject(mode="wb")
    with Heartbeat(sched) as hb:
        start = time.perf_counter()
        out["written"] = lo.write(data)
        out["write_wall"] = time.perf_counter() - start
    out["write_gap"], out["write_cpu_gap"] = hb.wall, hb.cpu
    lo.close()
    conn.commit()
    lo = conn.lobject(lo.oid, "rb")
    with Heartbeat(sched) as hb:
        start = time.perf_counter()
        got = lo.read()
        out["read_wall"] = time.perf_counter() - start
    out["read_gap"], out["read_cpu_gap"] = hb.wall, hb.cpu
    out["same"] = got == data
    lo.unlink()
    conn.commit()
    conn.close()
    return out


def busy(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """Another greenlet uses the connection while a large object streams: a clear error."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    lo = conn.lobject(mode="wb")
    data = b"x" * (64 * MiB)

    def writer() -> int:
        return int(lo.write(data))

    def intruder() -> list[str]:
        sched.sleep(0.05)
        errors = []
        for attempt in (lambda: conn.cursor().execute("SELECT 1"), conn.commit, lo.tell):
            try:
                attempt()
                errors.append("no error")
            except psycopg2.Error as exc:
                errors.append(type(exc).__name__)
        return errors

    written, errors = sched.join([sched.spawn(writer), sched.spawn(intruder)])
    out = {"written": written, "intruder": errors, "tell": lo.tell()}
    conn.rollback()
    conn.close()
    return out


def interrupted(sched: Scheduler, dsn: str) -> dict[str, Any]:
    """The scheduler's timeout during a long read: it propagates, nothing stays running."""
    _patch(sched)
    conn = psycopg2.connect(dsn)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    lo = conn.lobject(mode="wb")
    lo.truncate(512 * MiB)  # zeroes, written by the server: 512 MiB to read back
    lo.seek(0)
    pid = conn.get_backend_pid()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        with sched.timeout(0.3):
            lo.read()
        out["result"] = "finished"
    except sched.Timeout:
        out["result"] = "Timeout"
    out["elapsed"] = time.perf_counter() - start
    out["closed"] = conn.closed
    cur = watcher.cursor()
    deadline = time.perf_counter() + 5
    state = "active"
    while time.perf_counter() < deadline:
        cur.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cur.fetchone()
        state = row[0] if row else "gone"
        if state != "active":
            break
        time.sleep(0.01)
    out["server_state"] = state
    watcher.close()
    return out
