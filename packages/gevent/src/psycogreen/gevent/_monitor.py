# SPDX-License-Identifier: BSD-3-Clause
"""Who blocked the hub: psycopg2 or psycopg, called where psycogreen's wait callback is not.

gevent's monitor thread (``GEVENT_MONITOR_THREAD_ENABLE=1``, ``gevent.config.monitor_thread``)
checks every ``max_blocking_time`` seconds whether the hub's thread has switched greenlets, and
when it has not, notifies ``gevent.events.EventLoopBlocked`` from the monitor thread while the
hub is still blocked. psycopg2 without a wait callback blocks exactly that way: libpq waits for
the server inside a C call (with the GIL released, so the monitor runs). This module subscribes
to gevent's events, reads the blocked thread's stack, and when psycopg2 or psycopg is what it
is doing, logs a warning that names the cause and the fix, and emits a
:class:`~psycogreen.core.events.LoopBlocked` record.

Reading another thread's frames is safe under the GIL; the connection's status comes from
psycopg2's ``conn.info``, whose getters read libpq's fields without taking the connection's
lock (taking it here would deadlock with the blocked thread, which holds it).
"""

from __future__ import annotations

import dis
import logging
import sys
import threading
from types import CodeType, FrameType
from typing import Any, Literal

import gevent
from gevent import events as gevent_events
from psycogreen.core import events, psycopg_blocking_reason

__all__ = ["diagnose", "install", "on_event", "watching"]

_log = logging.getLogger("psycogreen")
_lock = threading.Lock()
# The last block reported (greenlet, frame, instruction): gevent reports a long block once
# per period, psycogreen once per block.
_last: tuple[int, int, int] | None = None
_warned: set[tuple[str, str]] = set()

# What an application calls on psycopg2's connections and cursors that may wait on the server.
_CALLS = frozenset(
    {
        "execute",
        "executemany",
        "callproc",
        "commit",
        "rollback",
        "fetchone",
        "fetchmany",
        "fetchall",
        "scroll",
        "connect",
        "copy_expert",
        "copy_from",
        "copy_to",
        "cancel",
        "reset",
        "set_session",
        "set_isolation_level",
        "set_client_encoding",
        "tpc_begin",
        "tpc_prepare",
        "tpc_commit",
        "tpc_rollback",
        "tpc_recover",
        "close",
        "__next__",
    }
)
_CALL_OPS = frozenset(name for name in dis.opmap if name.startswith("CALL"))
_NAME_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "LOAD_NAME"})
_ACTIVE = 1  # libpq's PQTRANS_ACTIVE: a command is in progress
_DEPTH = 40  # frames examined, innermost first
_NEAR = 6  # of which those searched for the call site and the connection

Cause = Literal["not_patched", "foreign_callback", "psycopg3", "blocking_call", "unknown"]


def install() -> bool:
    """Watch gevent's blocked-loop reports, if gevent's monitor thread is enabled.

    Called by ``patch_psycopg()`` and by the monkey plugin; a no-op when already watching.

    :return: whether the watcher is installed.
    """
    if not gevent.config.monitor_thread:
        return False
    with _lock:
        if on_event not in gevent_events.subscribers:
            gevent_events.subscribers.append(on_event)
    return True


def watching() -> bool:
    """Whether gevent's blocked-loop reports are being watched."""
    return on_event in gevent_events.subscribers


def on_event(event: object) -> None:
    """Diagnose every ``EventLoopBlocked`` of gevent's events; ignore the rest."""
    global _last  # noqa: PLW0603 (one monitor thread per hub; a few reads and writes)
    if not isinstance(event, gevent_events.EventLoopBlocked):
        return
    try:
        frame = _blocked_frame(event)
        if frame is None:
            return
        key = (id(event.greenlet), id(frame), frame.f_lasti)
        if key == _last:
            return  # the same block, reported again a period later
        record = diagnose(frame, float(event.blocking_time))
        if record is None:
            return
        _last = key
        _warn(record)
        events.emit(record)
    except Exception:  # noqa: BLE001 (never break gevent's monitor thread)
        _log.debug("psycogreen could not read the blocked hub's stack", exc_info=True)


def _blocked_frame(event: Any) -> FrameType | None:  # noqa: ANN401 (gevent's event)
    hub = getattr(event, "hub", None)
    ident = getattr(hub, "thread_ident", None)
    if ident is None:
        return None
    return sys._current_frames().get(ident)  # noqa: SLF001 (the one way to another thread's stack)


def diagnose(frame: FrameType, blocked_for: float) -> events.LoopBlocked | None:
    """What the blocked thread's ``frame`` shows, as a record; ``None`` if not psycopg's doing.

    psycopg2 is recognised by a frame of its Python modules (``psycopg2.connect``,
    ``psycopg2.extras``), or by a call to a DB-API method on a psycopg2 connection or cursor
    held by the innermost frames; psycopg 3 by a frame of its modules.
    """
    stack = _stack(frame)
    if any(_module(f).startswith("psycogreen.") for f in stack[:3]):
        return None  # psycogreen drives it (the hub's own context): core reports that
    psycopg2_frames = [f for f in stack if _is_module(_module(f), "psycopg2")]
    psycopg3_frames = [f for f in stack if _is_psycopg3(_module(f))]
    near = stack[:_NEAR]
    conn = _busy_connection(near)
    # A call of psycopg2's C methods has no frame: the frame that makes it is the call site
    # (below a wait callback of other code, which psycopg2 calls from C, when there is one).
    caller = next((f for f in near if _calls_dbapi(f)), None)
    ext = sys.modules.get("psycopg2.extensions")
    psycopg2_conn = ext is not None and isinstance(conn, ext.connection)
    if psycopg2_frames or (psycopg2_conn and caller is not None):
        site = _site(stack, psycopg2_frames) if psycopg2_frames else _where(caller)
        cause, callback, advice = _psycopg2_cause()
    elif psycopg3_frames:
        site = _site(stack, psycopg3_frames)
        cause, callback, advice = "psycopg3", None, _psycopg3_advice()
    else:
        return None
    pid, host, port = events.server_of(conn) if conn is not None else (None, None, None)
    return events.LoopBlocked(
        scheduler="gevent",
        cause=cause,
        site=site,
        blocked_for=blocked_for,
        callback=callback,
        advice=advice,
        pid=pid,
        host=host,
        port=port,
    )


def _stack(frame: FrameType) -> list[FrameType]:
    out: list[FrameType] = []
    current: FrameType | None = frame
    while current is not None and len(out) < _DEPTH:
        out.append(current)
        current = current.f_back
    return out


def _module(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", ""))


def _is_module(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_psycopg3(name: str) -> bool:
    return _is_module(name, "psycopg") or _is_module(name, "psycopg_pool")


def _busy_connection(frames: list[FrameType]) -> Any:  # noqa: ANN401 (a psycopg connection)
    """The psycopg2 (or psycopg 3) connection running a command, held by ``frames``' locals."""
    cursors, connections = _classes()
    if not connections:
        return None
    for frame in frames:
        for value in list(frame.f_locals.values()):
            conn: Any = getattr(value, "connection", None) if isinstance(value, cursors) else value
            if not isinstance(conn, connections) or _closed(conn):
                continue
            try:
                # psycopg2's TRANSACTION_STATUS_ACTIVE, psycopg 3's TransactionStatus.ACTIVE.
                if _status(conn) == _ACTIVE:
                    return conn
            except Exception:  # noqa: BLE001, S112 (a connection libpq cannot describe)
                continue
    return None


def _status(conn: Any) -> int:  # noqa: ANN401 (a psycopg connection)
    return int(conn.info.transaction_status)


def _closed(conn: Any) -> bool:  # noqa: ANN401 (a psycopg connection)
    return bool(conn.closed)


def _classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The cursor and connection classes of psycopg2 and psycopg 3, of those imported."""
    cursors: list[type] = []
    connections: list[type] = []
    ext = sys.modules.get("psycopg2.extensions")
    if ext is not None:
        cursors.append(ext.cursor)
        connections.append(ext.connection)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        cursors += [c for c in (getattr(psycopg, "Cursor", None),) if isinstance(c, type)]
        connections += [c for c in (getattr(psycopg, "Connection", None),) if isinstance(c, type)]
    return tuple(cursors), tuple(connections)


def _calls_dbapi(frame: FrameType) -> bool:
    """Whether ``frame`` is calling a method named like psycopg2's blocking ones."""
    code = frame.f_code
    wanted = frame.f_lasti
    names: list[str] = []
    for instr in _instructions(code):
        if instr.offset > wanted:
            break
        if instr.opname in _NAME_OPS and isinstance(instr.argval, str):
            names.append(instr.argval)
        if instr.offset == wanted:
            return instr.opname in _CALL_OPS and any(name in _CALLS for name in names[-4:])
    return False


_code_cache: dict[CodeType, list[dis.Instruction]] = {}


def _instructions(code: CodeType) -> list[dis.Instruction]:
    found = _code_cache.get(code)
    if found is None:
        if len(_code_cache) > 256:
            _code_cache.clear()
        found = _code_cache[code] = list(dis.get_instructions(code))
    return found


def _site(stack: list[FrameType], library: list[FrameType]) -> str:
    """The application's line: the frame that called into the library, else the innermost."""
    frame = stack[0]
    if library:
        outermost = library[-1]
        index = stack.index(outermost)
        if index + 1 < len(stack):
            frame = stack[index + 1]
    return _where(frame)


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def _psycopg2_cause() -> tuple[Cause, str | None, str]:
    ext = sys.modules.get("psycopg2.extensions")
    callback = ext.get_wait_callback() if ext is not None else None
    if callback is None:
        from psycogreen.gevent._plugin import ENV_VAR, enabled  # noqa: PLC0415 (import cycle)

        why = (
            f"{ENV_VAR}=0 turned psycogreen-gevent's automatic patching off"
            if not enabled()
            else "patch_psycopg() has not run (yet), or psycopg2's callback was removed"
        )
        advice = (
            f"psycopg2 has no wait callback ({why}), so libpq waited for the server inside a C "
            "call, blocking every greenlet. Call psycogreen.gevent.patch_psycopg() right after "
            "gevent.monkey.patch_all(), before any connection is made or query run."
        )
        return "not_patched", None, advice
    func = getattr(callback, "func", callback)
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    from psycogreen.core import current_scheduler  # noqa: PLC0415 (reads psycopg2's state)

    if current_scheduler() is None:
        advice = (
            f"psycopg2's wait callback is {name}, not psycogreen's, and it blocked the hub. "
            "Install psycogreen's with psycogreen.gevent.patch_psycopg(force=True)."
        )
        return "foreign_callback", name, advice
    advice = (
        "psycopg2 blocked although psycogreen's wait callback is installed: the call is one "
        "psycopg2 makes without the callback (its own conn.cancel() on a connection made "
        "before patching, a large object). Use a connection made after patch_psycopg() "
        "(psycopg2.connect then guards it) or run the call in a thread (gevent.threadpool)."
    )
    return "blocking_call", name, advice


def _psycopg3_advice() -> str:
    reason = psycopg_blocking_reason("gevent") or "its wait did not go through gevent's hub"
    return (
        f"psycopg 3 blocked the hub: {reason}. psycogreen cannot make psycopg 3 green; import "
        "psycopg only after gevent.monkey.patch_all() (not at the top of a gunicorn config "
        "file, nor with preload_app)."
    )


def _warn(record: events.LoopBlocked) -> None:
    key = (record.cause, record.site)
    level = logging.DEBUG if key in _warned else logging.WARNING
    _warned.add(key)
    where = f" (backend pid {record.pid} on {record.host})" if record.pid is not None else ""
    _log.log(
        level,
        "gevent's hub was blocked for more than %g s by a database call at %s%s: %s",
        record.blocked_for,
        record.site,
        where,
        record.advice,
    )
