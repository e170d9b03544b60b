# SPDX-License-Identifier: BSD-3-Clause
"""One soak run, in a process monkey-patched for one scheduler: ``soak_child.py CONFIG_JSON``.

``bench/soak.py`` starts it; the last line of stdout is the run's result as JSON, progress
goes to stderr. CONFIG_JSON gives the scheduler (``gevent``, ``eventlet``), the implementation
(``current``: this checkout's psycogreen; ``legacy``: psycogreen 1.0.2's callback), the DSN
through the freezable proxy, the DSN of the server itself, the control socket of the parent
(which freezes the proxy and restarts the server), the duration, the number of clients and
the seed.

What runs, all in one OS thread:

- a worker per client slot, on a connection of its own through the proxy, running
  self-verifying statements (every reply carries a token the statement sent) and
  transactions whose rows carry a token and are checked at the end. A worker that is
  killed ends; its slot starts a new one, which reconnects;
- the chaos: scheduler timeouts, psycogreen deadlines and two interrupts that expire
  together, armed by a worker on its next operation when the chaos asks for one; kills of
  workers at random moments; ``pg_terminate_backend`` from an admin connection; proxy
  freezes; server restarts;
- a monitor, which checks from an admin connection that the statement an interrupt hit is no
  longer running 1 s later (1 s after the network came back, when a freeze overlaps), and
  reports operations that run for longer than any chaos explains;
- a heartbeat, whose worst gap is the hub's.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))  # tests.support.monkey

import json  # noqa: E402

CONFIG = json.loads(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else {}
SCHED = CONFIG.get("scheduler", "")

from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for(SCHED)

import collections  # noqa: E402 (after monkey-patching, on purpose)
import contextlib  # noqa: E402
import faulthandler  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402
import psycopg2.extensions  # noqa: E402

sys.path.append(str(HERE))

#: The cancel bound of psycogreen in the soak: longer than any freeze, so that a cancel
#: request sent while the network is frozen is still delivered when it comes back.
CANCEL_BOUND = 4.0
#: Freezes last this long (seconds), at random.
FREEZE_SECONDS = (1.0, 3.0)
#: libpq's connect_timeout for the workers (whole seconds; psycogreen honours it).
CONNECT_TIMEOUT = 2
#: When the monitor checks an interrupted statement, after the interrupt (or the thaw).
CHECK_AFTER = 1.0
#: An operation running longer than this is reported as hung: the longest legitimate one is a
#: 3 s statement behind a 3 s freeze, then a cancel bound and an answer bound of 4 s each.
HUNG_AFTER = 30.0
#: Kinds of chaos that arm a worker's next operation, or act on the spot.
ARMED = ("timeout", "deadline", "double")
KINDS = ("timeout", "kill", "deadline", "terminate", "double", "freeze", "restart")


def now() -> float:
    return time.monotonic()


# --- the scheduler ---------------------------------------------------------------------------


class Green:
    """The scheduler operations the soak needs, the same for gevent and eventlet."""

    def __init__(self, name: str) -> None:
        import greenlet

        self.name = name
        self.Exit = greenlet.GreenletExit
        if name == "gevent":
            import gevent

            self._g = gevent
            self.Timeout = gevent.Timeout
        else:
            import eventlet

            self._e = eventlet
            self.Timeout = eventlet.Timeout

    def spawn(self, func: Callable[..., Any], *args: Any) -> Any:
        if self.name == "gevent":
            return self._g.spawn(func, *args)
        return self._e.spawn(func, *args)

    def sleep(self, seconds: float) -> None:
        if self.name == "gevent":
            self._g.sleep(seconds)
        else:
            self._e.sleep(seconds)

    def kill(self, task: Any) -> None:
        """Throw ``GreenletExit`` into ``task`` without waiting for it to end."""
        if self.name == "gevent":
            task.kill(block=False)
        else:
            task.kill()

    def join(self, task: Any, timeout: float | None = None) -> bool:
        """Wait for ``task`` to end, ``timeout`` seconds at most; whether it has ended."""
        if self.name == "gevent":
            task.join(timeout)
            return bool(task.dead)
        with self._e.Timeout(timeout, False), contextlib.suppress(Exception, self.Exit):
            task.wait()
        return bool(task.dead)

    def timeout(self, seconds: float) -> Any:
        return self.Timeout(seconds)


# --- the run's state -------------------------------------------------------------------------


@dataclass
class Order:
    """An interruption a worker arms on its next operation (or a statement for a kill)."""

    kind: str  # timeout, deadline, double-timeouts, double-mixed, kill-target
    seconds: float
    op: str  # long, txn, any


@dataclass
class Armed:
    """What one operation was armed with: the interrupts that may legitimately reach it."""

    order: Order | None = None
    timeouts: list[Any] = field(default_factory=list)
    deadline: bool = False
    expires: float = 0.0


@dataclass
class Slot:
    """One client: its current worker, connection and bookkeeping."""

    index: int
    gen: int = 0
    task: Any = None
    conn: Any = None
    pid: int | None = None
    seq: int = 0
    orders: collections.deque[Order] = field(default_factory=collections.deque)
    busy_since: float | None = None
    statement: tuple[int, str, str] | None = None  # (backend pid, token, op) while in flight
    phase: str = "idle"  # connect, statement, commit, rollback, back-off, idle
    txn: str | None = None  # the token of the transaction under way
    armed: Armed | None = None
    kill_sent: float | None = None
    kill_recorded: bool = False
    hung_reported: int = -1


@dataclass
class Check:
    """A statement an interrupt hit, to be found no longer running."""

    due: float
    at: float
    pid: int
    token: str
    kind: str
    after_thaw: bool = False


class Run:
    """Everything one soak run counts."""

    def __init__(self, config: dict[str, Any], green: Green) -> None:
        self.config = config
        self.green = green
        self.impl = config["impl"]
        self.run_id = config["run_id"]
        self.app = f"soak-{self.run_id}-w"
        self.admin_app = f"soak-{self.run_id}-admin"
        self.rng = random.Random(config["seed"])
        self.seconds = float(config["seconds"])
        self.started = now()
        self.end = self.started + self.seconds
        self.stopping = False
        self.slots = [Slot(i) for i in range(config["clients"])]
        self.counts: collections.Counter[str] = collections.Counter()
        self.chaos: dict[str, collections.Counter[str]] = {
            k: collections.Counter() for k in (*KINDS, "double-timeouts", "double-mixed")
        }
        self.exceptions: collections.Counter[str] = collections.Counter()
        self.messages: collections.Counter[str] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.samples: dict[str, list[Any]] = collections.defaultdict(list)
        # token -> [rows, open|committing|acked, when the worker was done with it]; settled
        # transactions are checked against the table as the run goes, and forgotten
        self.txns: dict[str, list[Any]] = {}
        self.txn_counts: collections.Counter[str] = collections.Counter()
        self.rows_verified = 0
        self.checks: list[Check] = []
        self.checked = 0
        self.checked_after_thaw = 0
        self.still_active = 0
        self.hung = 0
        self.harness_errors = 0
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.freezes: list[tuple[float, float]] = []
        self.restarts: list[dict[str, Any]] = []
        self.restarting_since: float | None = None
        self.kills: dict[tuple[int, int], dict[str, Any]] = {}
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=200_000)
        # the heartbeat's gaps: a histogram of 1 ms buckets, and the worst one
        self.gap_buckets = [0] * 2001
        self.gap_worst = (0.0, 0.0)  # (gap, when)
        self.heartbeat_interval = 0.005
        self.rss_start = 0
        self.rss_samples: list[tuple[float, float]] = []
        self.rss_peak = 0

    # --- bookkeeping --------------------------------------------------------------------------

    def sample(self, key: str, item: Any, limit: int = 20) -> None:
        if len(self.samples[key]) < limit:
            self.samples[key].append(item)

    def event(self, what: str) -> None:
        self.events.append((now() - self.started, what))

    def frozen_at(self, t: float) -> bool:
        return any(start <= t <= end for start, end in self.freezes)

    def delay(self, kind: str, seconds: float, at: float, slot: Slot) -> None:
        """Record how long an interrupt took to reach the interrupted code."""
        frozen = self.frozen_at(at) or self.frozen_at(at + seconds)
        self.latency[kind].append(seconds)
        if frozen:
            self.latency["while frozen"].append(seconds)
            if kind in ("timeout", "kill") and slot.statement is not None:
                # one interrupt, in a statement whose cancel request cannot get through:
                # psycogreen waits INTERRUPT_GRACE (50 ms) for it, then lets the interrupt go
                self.latency["frozen, one interrupt, in a statement"].append(seconds)
        slowest = self.samples["slowest interrupts"]
        slowest.append(
            {
                "kind": kind,
                "ms": round(seconds * 1000, 1),
                "at": round(at - self.started, 2),
                "frozen": frozen,
                "restarting": self.restarting_since is not None
                or any(
                    r["at"] <= at - self.started <= r["at"] + r["seconds"] + 0.5
                    for r in self.restarts
                ),
                "after a thaw": any(end <= at <= end + 1.0 for _, end in self.freezes),
                "statement": slot.statement is not None,
            }
        )
        slowest.sort(key=lambda item: -item["ms"])
        del slowest[5:]

    def context(self, exc: BaseException, at: float, slot: Slot) -> dict[str, Any]:
        """Where the run was when ``exc`` came: for the samples of the report."""
        rel = at - self.started
        return {
            "message": str(exc).strip()[:200],
            "at": round(rel, 2),
            "phase": slot.phase,
            "frozen": self.frozen_at(at),
            "after a thaw": any(end <= at <= end + 1.0 for _, end in self.freezes),
            "restarting": any(
                r["at"] - 0.1 <= rel <= r["at"] + r["seconds"] + 0.5 for r in self.restarts
            ),
            "restart in progress": self.restarting_since is not None,
        }

    def message(self, exc: BaseException, slot: Slot) -> None:
        """Count an ambient error by its first line, numbers taken out (for the report only)."""
        first = (str(exc).strip().splitlines() or [""])[0]
        text = re.sub(r"\d+(\.\d+)?", "N", first)[:120]
        key = f"{qualname(exc).rpartition('.')[2]}: {text} [{slot.phase}]"
        self.messages[key] += 1

    def harness(self, where: str, exc: BaseException) -> None:
        self.harness_errors += 1
        self.sample("harness", f"{where}: {type(exc).__name__}: {exc}")
        print(f"soak: harness error in {where}: {exc!r}", file=sys.stderr)


def rss() -> int:
    """This process's resident set, in bytes."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    try:
        return sum(1 for _ in Path("/proc/self/fd").iterdir())
    except OSError:
        return -1


def live_greenlets() -> int:
    import greenlet

    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead and o)


def qualname(exc: BaseException) -> str:
    kind = type(exc)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


# --- the parent's control socket, and admin connections --------------------------------------


def control(run: Run, command: str) -> str:
    """Send one command to the parent (freeze, thaw, restart) and return its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(run.config["control"])
        sock.sendall(command.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    text = answer.decode().strip()
    if not text.startswith("ok"):
        raise RuntimeError(f"control {command!r}: {text!r}")
    return text


class Admin:
    """A connection straight to the server (never through the proxy), reopened when lost."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.conn: Any = None

    def query(self, sql: str, params: tuple[Any, ...] = (), patience: float = 60.0) -> list[Any]:
        give_up = now() + patience
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg2.connect(
                        self.run.config["direct_dsn"], application_name=self.run.admin_app
                    )
                    self.conn.autocommit = True
                cur = self.conn.cursor()
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except psycopg2.OperationalError:
                # the server restarting: try again
                self.close()
                if now() > give_up:
                    raise
                self.run.green.sleep(0.1)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


# --- workers ---------------------------------------------------------------------------------


class Worker:
    """The operations of one worker, and what it makes of every exception."""

    def __init__(self, run: Run, impl: Any) -> None:
        self.run = run
        self.green = run.green
        self.impl = impl  # the psycogreen core module, or None for 1.0.2

    # --- connections ------------------------------------------------------------------------

    def connect(self, slot: Slot) -> None:
        conn = psycopg2.connect(
            self.run.config["dsn"],
            application_name=self.run.app,
            connect_timeout=CONNECT_TIMEOUT,
        )
        conn.autocommit = True
        slot.conn = conn
        slot.pid = conn.get_backend_pid()
        self.run.counts["connects"] += 1

    def drop(self, slot: Slot) -> None:
        conn, slot.conn, slot.pid = slot.conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # --- statements -------------------------------------------------------------------------

    def token(self, slot: Slot) -> str:
        slot.seq += 1
        return f"{self.run.run_id}:{slot.index}.{slot.gen}.{slot.seq}"

    def execute(self, slot: Slot, op: str, sql: str, params: tuple[Any, ...]) -> list[Any]:
        assert slot.conn is not None
        cur = slot.conn.cursor()
        assert slot.pid is not None
        slot.statement = (slot.pid, str(params[0]), op)
        cur.execute(sql, params)
        slot.statement = None
        rows = cur.fetchall() if cur.description else []
        self.run.counts["queries"] += 1
        return rows

    def verify(self, slot: Slot, op: str, expected: list[Any], got: list[Any]) -> None:
        if got != expected:
            self.run.counts["mixed"] += 1
            self.run.sample(
                "mixed", {"slot": slot.index, "op": op, "expected": expected[:3], "got": got[:3]}
            )

    def op_short(self, slot: Slot) -> None:
        tok = self.token(slot)
        rows = self.execute(slot, "short", "SELECT %s, %s", (tok, slot.seq))
        self.verify(slot, "short", [(tok, slot.seq)], rows)

    def op_rows(self, slot: Slot) -> None:
        tok = self.token(slot)
        n = self.run.rng.randint(2, 200)
        rows = self.execute(slot, "rows", "SELECT %s, g FROM generate_series(1, %s) g", (tok, n))
        self.verify(slot, "rows", [(tok, i) for i in range(1, n + 1)], rows)

    def op_sleep(self, slot: Slot, seconds: float, op: str = "sleep") -> None:
        tok = self.token(slot)
        rows = self.execute(slot, op, "SELECT %s, pg_sleep(%s)::text", (tok, round(seconds, 4)))
        self.verify(slot, op, [(tok, "")], rows)

    def op_txn(self, slot: Slot, pause: float) -> None:
        run = self.run
        conn = slot.conn
        tok = self.token(slot)
        n = run.rng.randint(1, 5)
        entry = run.txns[tok] = [n, "open", None]
        slot.txn = tok
        conn.autocommit = False
        rows = self.execute(
            slot,
            "insert",
            "INSERT INTO soak_rows (token, run, n) SELECT %s, %s, g FROM generate_series(1, %s) g "
            "RETURNING token, n",
            (tok, run.run_id, n),
        )
        self.verify(slot, "insert", [(tok, i) for i in range(1, n + 1)], sorted(rows))
        if pause:
            self.op_sleep(slot, pause, "txn-sleep")
        entry[1] = "committing"
        slot.phase = "commit"
        conn.commit()
        slot.phase = "statement"
        # No switch can happen between commit() returning and this line: if it is reached,
        # the server acknowledged the commit.
        entry[1] = "acked"
        run.counts["queries"] += 1
        run.counts["commits"] += 1
        conn.autocommit = True

    def operation(self, slot: Slot, order: Order | None) -> None:
        rng = self.run.rng
        op = order.op if order is not None else "any"
        if op == "long":
            self.op_sleep(slot, rng.uniform(1.5, 3.0), "long")
            return
        if op == "outlast":
            # longer than any freeze plus the check's second: a cancel that is lost shows
            self.op_sleep(slot, rng.uniform(FREEZE_SECONDS[1] + 2, FREEZE_SECONDS[1] + 3), "long")
            return
        if op == "txn":
            self.op_txn(slot, rng.uniform(0.0, 0.2))
            return
        roll = rng.random()
        if roll < 0.6:
            self.op_short(slot)
        elif roll < 0.75:
            self.op_rows(slot)
        elif roll < 0.85:
            self.op_sleep(slot, rng.uniform(0.005, 0.1))
        else:
            self.op_txn(slot, rng.uniform(0.0, 0.05) if rng.random() < 0.3 else 0.0)

    # --- arming -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def arming(self, order: Order | None, armed: Armed) -> Iterator[None]:
        if order is None or order.kind == "kill-target":
            yield
            return
        d = order.seconds
        with contextlib.ExitStack() as stack:
            if order.kind in ("deadline", "double-mixed"):
                assert self.impl is not None
                stack.enter_context(self.impl.timeout(d))
                armed.deadline = True
            if order.kind in ("timeout", "double-timeouts", "double-mixed"):
                armed.timeouts.append(stack.enter_context(self.green.timeout(d)))
            if order.kind == "double-timeouts":
                armed.timeouts.append(stack.enter_context(self.green.timeout(d)))
            armed.expires = now() + d
            yield

    # --- one operation, and its outcome ------------------------------------------------------

    def one(self, slot: Slot, order: Order | None) -> None:
        armed = Armed(order)
        slot.armed = armed
        slot.busy_since = now()
        try:
            try:
                with self.arming(order, armed):
                    if slot.conn is None or slot.conn.closed:
                        self.drop(slot)
                        slot.phase = "connect"
                        self.connect(slot)
                    slot.phase = "statement"
                    self.operation(slot, order)
                if order is not None and order.kind != "kill-target":
                    self.run.chaos[self.family(order)]["finished first"] += 1
            except self.green.Exit:
                self.killed(slot)
                raise
            except BaseException as exc:
                self.failed(slot, exc, armed)
                self.recover(slot)
        finally:
            if slot.txn is not None:
                self.run.txns[slot.txn][2] = now()  # done with, whatever its outcome
                slot.txn = None
            slot.statement = None
            slot.armed = None
            slot.busy_since = None
            slot.phase = "idle"

    @staticmethod
    def family(order: Order) -> str:
        return "double" if order.kind.startswith("double") else order.kind

    def failed(self, slot: Slot, exc: BaseException, armed: Armed) -> None:
        """Account for ``exc``: whose interrupt it is, and whether it may be raised at all."""
        run = self.run
        t = now()
        name = qualname(exc)
        run.exceptions[name] += 1
        order = armed.order
        statement = slot.statement
        ours = [x for x in armed.timeouts if exc is x]
        if ours:
            assert order is not None
            family = self.family(order)
            run.chaos[family]["landed"] += 1
            if order.kind != family:
                run.chaos[order.kind]["landed"] += 1
            if len(armed.timeouts) == 2 and exc.__context__ is not None:
                # the other one, thrown in while the first one's cancel was being sent
                run.chaos[family]["second during the first's cancel"] += 1
            run.delay(family, t - armed.expires, armed.expires, slot)
            self.interrupted(slot, statement, family, t)
            return
        if armed.deadline and isinstance(exc, psycopg2.errors.QueryCanceled):
            assert order is not None
            family = self.family(order)
            run.chaos[family]["landed"] += 1
            if order.kind != family:
                run.chaos[order.kind]["landed"] += 1
            run.chaos[family]["QueryCanceled"] += 1
            if slot.conn is not None and not slot.conn.closed:
                run.chaos[family]["connection kept"] += 1
            else:
                self.unexpected(slot, exc, "QueryCanceled, and the connection was closed")
            self.interrupted(slot, statement, family, t)
            return
        if isinstance(exc, psycopg2.errors.QueryCanceled):
            self.unexpected(slot, exc, "QueryCanceled without a deadline")
            return
        if isinstance(exc, psycopg2.OperationalError):
            run.message(exc, slot)
            if armed.deadline and t >= armed.expires:
                assert order is not None
                # the deadline's cancel could not be delivered in time (or, as for any
                # operation, a terminate or restart hit it): both are documented
                run.chaos[self.family(order)]["OperationalError"] += 1
                run.sample("deadline: OperationalError", run.context(exc, armed.expires, slot))
                self.interrupted(slot, statement, self.family(order), t)
            return
        if isinstance(exc, self.green.Timeout):
            self.unexpected(slot, exc, "a Timeout this operation did not arm")
            return
        self.unexpected(slot, exc, "not an interruption's exception")

    def unexpected(self, slot: Slot, exc: BaseException, why: str) -> None:
        run = self.run
        name = qualname(exc)
        run.unexpected[name] += 1
        armed = slot.armed
        run.sample(
            "unexpected",
            {
                "type": name,
                "why": why,
                "message": str(exc)[:300],
                "armed": None if armed is None or armed.order is None else armed.order.kind,
                "statement": None if slot.statement is None else slot.statement[2],
                "at": round(now() - run.started, 3),
                "traceback": "".join(traceback.format_exception(exc))[-2500:],
            },
        )

    def interrupted(
        self, slot: Slot, statement: tuple[int, str, str] | None, kind: str, t: float
    ) -> None:
        phase = "statement" if statement is not None else slot.phase
        self.run.chaos[kind][f"landed in: {phase}"] += 1
        if statement is None:
            return
        self.run.chaos[kind]["hit a statement"] += 1
        pid, token, _ = statement
        self.run.checks.append(Check(t + CHECK_AFTER, t, pid, token, kind))

    def killed(self, slot: Slot) -> None:
        if slot.kill_recorded:
            return
        slot.kill_recorded = True
        run = self.run
        t = now()
        run.exceptions["GreenletExit"] += 1
        if slot.kill_sent is None:
            self.unexpected(slot, self.green.Exit(), "GreenletExit that no kill sent")
            return
        run.chaos["kill"]["landed"] += 1
        sent = run.kills.get((slot.index, slot.gen))
        if sent is not None:
            sent["landed"] = True
        run.delay("kill", t - slot.kill_sent, slot.kill_sent, slot)
        self.interrupted(slot, slot.statement, "kill", t)

    def recover(self, slot: Slot) -> None:
        """After a failed operation: keep the connection if it is usable, else drop it."""
        conn = slot.conn
        if conn is None:
            slot.phase = "back-off"
            self.green.sleep(self.run.rng.uniform(0.02, 0.1))  # connect failed: back off
            return
        if conn.closed:
            self.drop(slot)
            return
        slot.phase = "rollback"
        try:
            conn.rollback()
            conn.autocommit = True
        except self.green.Exit:
            raise
        except BaseException as exc:
            self.run.exceptions[qualname(exc)] += 1
            if not isinstance(exc, psycopg2.OperationalError) or isinstance(
                exc, psycopg2.errors.QueryCanceled
            ):
                self.unexpected(slot, exc, "rollback after a failed operation")
            self.drop(slot)

    # --- the worker and its slot ------------------------------------------------------------

    def work(self, slot: Slot) -> None:
        ended = "stopped"
        try:
            while not self.run.stopping:
                order = slot.orders.popleft() if slot.orders else None
                self.one(slot, order)
        except self.green.Exit:
            ended = "killed"
            self.killed(slot)  # a kill outside an operation's try (rollback, back-off)
        except BaseException as exc:
            ended = f"escaped: {qualname(exc)}"
            self.unexpected(slot, exc, "escaped the worker")
        finally:
            self.drop(slot)
            sent = self.run.kills.get((slot.index, slot.gen))
            if sent is not None:
                sent["worker ended"] = ended
                sent["ended at"] = round(now() - self.run.started, 3)

    def supervise(self, slot: Slot) -> None:
        while not self.run.stopping:
            slot.gen += 1
            slot.kill_sent = None
            slot.kill_recorded = False
            slot.task = self.green.spawn(self.work, slot)
            self.green.join(slot.task)


# --- chaos -----------------------------------------------------------------------------------


class Chaos:
    """The tasks that inject every kind of interruption, at random."""

    def __init__(self, run: Run, legacy: bool) -> None:
        self.run = run
        self.green = run.green
        self.legacy = legacy
        self.admin = Admin(run)
        self.rate = float(run.config.get("chaos_rate", 8.0))

    def pick(self, busy: bool = False) -> Slot | None:
        slots = [
            s
            for s in self.run.slots
            if (not busy or (s.busy_since is not None and s.kill_sent is None))
            and len(s.orders) < 2
        ]
        return self.run.rng.choice(slots) if slots else None

    def order(self, kind: str) -> None:
        rng = self.run.rng
        slot = self.pick()
        if slot is None:
            return
        roll = rng.random()
        if kind.startswith("double"):
            op = "long" if roll < 0.7 else "any"
            d = rng.uniform(0.02, 0.3) if op == "long" else rng.uniform(0.001, 0.03)
        elif roll < 0.5:
            op, d = "long", rng.uniform(0.02, 0.4)
        elif roll < 0.8:
            op, d = "txn", rng.uniform(0.002, 0.25)
        else:
            op, d = "any", rng.uniform(0.001, 0.03)
        slot.orders.append(Order(kind, d, op))
        family = "double" if kind.startswith("double") else kind
        self.run.chaos[family]["injected"] += 1
        if family != kind:
            self.run.chaos[kind]["injected"] += 1
        self.run.event(kind)

    def send_kill(self, slot: Slot) -> None:
        if slot.kill_sent is not None or slot.task is None or slot.busy_since is None:
            return
        slot.kill_sent = now()
        run = self.run
        run.chaos["kill"]["injected"] += 1
        run.event("kill")
        armed = slot.armed
        run.kills[(slot.index, slot.gen)] = {
            "slot": slot.index,
            "gen": slot.gen,
            "at": round(slot.kill_sent - run.started, 3),
            "phase": slot.phase,
            "statement": None if slot.statement is None else slot.statement[2],
            "armed": None if armed is None or armed.order is None else armed.order.kind,
            "frozen": run.frozen_at(slot.kill_sent),
            "restart in progress": run.restarting_since is not None,
        }
        self.green.kill(slot.task)

    def kill(self) -> None:
        rng = self.run.rng
        if rng.random() < 0.5:
            slot = self.pick(busy=True)
            if slot is not None:
                self.send_kill(slot)
            return
        # the other half: a kill during a long statement
        slot = self.pick()
        if slot is None:
            return
        slot.orders.append(Order("kill-target", 0.0, "long"))
        self.green.spawn(self.kill_during_statement, slot, slot.gen)

    def kill_during_statement(self, slot: Slot, gen: int) -> None:
        give_up = now() + 5.0
        while now() < give_up and not self.run.stopping:
            if slot.gen != gen:
                return
            statement = slot.statement
            if statement is not None and statement[2] == "long":
                self.green.sleep(self.run.rng.uniform(0.02, 0.3))
                if slot.gen == gen and slot.statement is statement:
                    self.send_kill(slot)
                return
            self.green.sleep(0.01)

    def terminate(self) -> None:
        slots = [s for s in self.run.slots if s.pid is not None]
        if not slots:
            return
        slot = self.run.rng.choice(slots)
        pid = slot.pid
        self.run.chaos["terminate"]["injected"] += 1
        self.run.event("terminate")
        rows = self.admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = %s AND application_name = %s",
            (pid, self.run.app),
        )
        if rows and rows[0][0]:
            self.run.chaos["terminate"]["landed"] += 1

    def inject(self, kind: str) -> None:
        if kind == "kill":
            self.kill()
        elif kind == "terminate":
            self.terminate()
        elif kind == "double":
            variants = ["double-timeouts"] if self.legacy else ["double-timeouts", "double-mixed"]
            self.order(self.run.rng.choice(variants))
        else:
            self.order(kind)

    def instant(self) -> None:
        """Timeouts, deadlines, double interrupts, kills, terminates: each at least once early."""
        run = self.run
        kinds = ["timeout", "kill", "terminate", "double"] + ([] if self.legacy else ["deadline"])
        weights = {"timeout": 3, "kill": 3, "deadline": 3, "terminate": 2, "double": 2}
        first = [*kinds, *kinds]
        if not self.legacy:
            first += ["double-timeouts", "double-mixed"]
        run.rng.shuffle(first)
        self.green.sleep(min(1.0, run.seconds / 20))
        try:
            for kind in first:
                if now() >= run.end:
                    return
                self.order(kind) if kind.startswith("double-") else self.inject(kind)
                self.green.sleep(0.1)
            while now() < run.end:
                self.green.sleep(run.rng.expovariate(self.rate))
                self.inject(run.rng.choices(kinds, [weights[k] for k in kinds])[0])
        except Exception as exc:
            run.harness("chaos", exc)

    def freezes(self) -> None:
        run = self.run
        rng = run.rng
        at = run.started + max(2.0, run.seconds * 0.12)
        every = float(run.config.get("freeze_every", 25.0))
        try:
            while at < run.end - FREEZE_SECONDS[1] - 1:
                self.green.sleep(max(0.0, at - now()))
                seconds = rng.uniform(*FREEZE_SECONDS)
                self.arm_for_freeze()
                self.green.sleep(0.25)  # the armed operations start
                start = now()
                control(run, f"freeze {seconds:.3f}")
                run.freezes.append((start, now() + seconds))
                for _ in range(2):
                    self.green.spawn(self.kill_later, rng.uniform(0.1, seconds - 0.2))
                run.chaos["freeze"]["injected"] += 1
                run.chaos["freeze"]["landed"] += 1
                run.event(f"freeze {seconds:.1f} s")
                at = now() + seconds + rng.expovariate(1 / every)
        except Exception as exc:
            run.harness("freeze", exc)

    def arm_for_freeze(self) -> None:
        """Interrupts that will expire while the network is frozen, on statements outlasting it."""
        run = self.run
        kinds = ["timeout", "double-timeouts"]
        if not self.legacy:
            kinds += ["deadline", "double-mixed"]
        slots = [s for s in run.slots if not s.orders]
        for slot in run.rng.sample(slots, min(6, len(slots))):
            kind = run.rng.choice(kinds)
            slot.orders.append(Order(kind, run.rng.uniform(0.4, 1.0), "outlast"))
            family = "double" if kind.startswith("double") else kind
            run.chaos[family]["injected"] += 1
            run.chaos[family]["armed to expire while frozen"] += 1
            if family != kind:
                run.chaos[kind]["injected"] += 1
            run.event(f"{kind}, to expire while frozen")

    def kill_later(self, delay: float) -> None:
        self.green.sleep(delay)
        slot = self.pick(busy=True)
        if slot is not None:
            self.send_kill(slot)

    def restarts(self) -> None:
        run = self.run
        count = max(1, round(run.seconds / float(run.config.get("restart_every", 100.0))))
        # spread over the middle of the run, the first at 40%
        times = [
            run.started + run.seconds * (0.4 + 0.45 * i / max(1, count - 1)) for i in range(count)
        ]
        if count == 1:
            times = [run.started + run.seconds * 0.4]
        try:
            for i, at in enumerate(times):
                self.green.sleep(max(0.0, at - now()))
                if now() >= run.end:
                    return
                mode = "immediate" if i % 2 == 0 else "fast"
                start = now()
                run.event(f"restart {mode}")
                run.chaos["restart"]["injected"] += 1
                run.restarting_since = start
                try:
                    answer = control(run, f"restart {mode}")
                finally:
                    run.restarting_since = None
                run.chaos["restart"]["landed"] += 1
                run.restarts.append(
                    {
                        "mode": mode,
                        "at": round(start - run.started, 2),
                        "seconds": round(now() - start, 3),
                        "server": answer,
                    }
                )
        except Exception as exc:
            run.harness("restart", exc)


# --- the monitor and the heartbeat -----------------------------------------------------------


def postpone(check: Check, freezes: list[tuple[float, float]], t: float) -> bool:
    """Move ``check`` to 1 s after the thaw of a freeze since its interrupt; whether it moved.

    While the proxy is frozen, a cancel request cannot reach the server: it goes out at the
    thaw (the soak's cancel bound outlasts every freeze).
    """
    thawed = [end for start, end in freezes if start <= t and end > check.at]
    if thawed and max(thawed) + CHECK_AFTER > check.due:
        check.due = max(thawed) + CHECK_AFTER
        check.after_thaw = True
        return True
    return False


def monitor(run: Run, admin: Admin, done: list[bool]) -> None:
    """Check interrupted statements 1 s on; report operations that hang."""
    green = run.green
    while not (done and not run.checks):
        t = now()
        due = [c for c in run.checks if c.due <= t]
        for check in due:
            if postpone(check, run.freezes, t):
                continue
            run.checks.remove(check)
            try:
                rows = admin.query(
                    "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (check.pid,)
                )
            except Exception as exc:
                run.harness("monitor", exc)
                continue
            run.checked += 1
            if check.after_thaw:
                run.checked_after_thaw += 1
            if rows and rows[0][0] == "active" and check.token in (rows[0][1] or ""):
                run.still_active += 1
                run.sample(
                    "still active",
                    {
                        "kind": check.kind,
                        "after a thaw": check.after_thaw,
                        "token": check.token,
                        "checked after": round(now() - check.at, 2),
                        "at": round(check.at - run.started, 2),
                    },
                )
        for slot in run.slots:
            since = slot.busy_since
            if since is not None and t - since > HUNG_AFTER and slot.hung_reported != slot.gen:
                slot.hung_reported = slot.gen
                run.hung += 1
                run.sample("hung", {"slot": slot.index, "stack": stack_of(slot.task)})
        green.sleep(0.05)


def stack_of(task: Any) -> str:
    frame = getattr(task, "gr_frame", None)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"


def heartbeat(run: Run, done: list[bool]) -> None:
    green = run.green
    interval = run.heartbeat_interval
    last = now()
    while not done:
        green.sleep(interval)
        t = now()
        gap = t - last - interval
        run.gap_buckets[min(len(run.gap_buckets) - 1, max(0, int(gap * 1000)))] += 1
        if gap > run.gap_worst[0]:
            run.gap_worst = (gap, t)
        last = t


def progress(run: Run) -> None:
    green = run.green
    while now() < run.end:
        green.sleep(min(10.0, max(0.5, run.end - now())))
        elapsed = now() - run.started
        chaos = " ".join(f"{k}={run.chaos[k]['injected']}" for k in KINDS)
        print(
            f"soak {run.config['scheduler']}/{run.impl}: {elapsed:5.0f} s, "
            f"{run.counts['queries']} queries, {chaos}",
            file=sys.stderr,
            flush=True,
        )
        size = rss()
        run.rss_peak = max(run.rss_peak, size)
        run.rss_samples.append((round(elapsed, 1), round(size / 2**20, 1)))


# --- the end: everything verified ------------------------------------------------------------


def settle(run: Run, admin: Admin, older_than: float | None) -> None:
    """Check the rows of the transactions workers are done with, then forget them.

    ``older_than``: only those done with that many seconds ago (their backends gone by then);
    ``None``: every one, unfinished included (the end of the run).
    """
    t = now()
    tokens = [
        token
        for token, (_, _, done) in run.txns.items()
        if older_than is None or (done is not None and t - done >= older_than)
    ]
    for start in range(0, len(tokens), 2000):
        chunk = tokens[start : start + 2000]
        found = dict(
            admin.query(
                "SELECT token, array_agg(n ORDER BY n) FROM soak_rows "
                "WHERE run = %s AND token = ANY(%s) GROUP BY token",
                (run.run_id, chunk),
            )
        )
        for token in chunk:
            n, state, _ = run.txns.pop(token)
            classify(run, token, n, state, found.get(token))


def classify(run: Run, token: str, n: int, state: str, ns: list[int] | None) -> None:
    """Count one transaction's outcome from the rows found for it (``None``: no row)."""
    out = run.txn_counts
    complete = ns == list(range(1, n + 1))
    run.rows_verified += len(ns or ())
    if ns is not None and not complete:
        out["torn"] += 1
        run.sample("torn", {"token": token, "rows": ns, "expected": n, "state": state})
    if state == "acked":
        out["acked"] += 1
        if not complete:
            out["acked missing"] += 1
            run.sample("acked missing", token)
    elif state == "open":
        out["failed before COMMIT"] += 1
        if ns is not None:
            out["failed rows"] += len(ns)
            run.sample("failed rows", token)
    else:
        out["in doubt"] += 1
        if complete:
            out["in doubt, committed"] += 1


def verify_rows(run: Run, admin: Admin) -> dict[str, int]:
    """Settle every transaction left, then compare the table's rows with those checked.

    More rows than checked: rows that no worker wrote, or that appeared after their
    transaction was checked (a failed one committing late). Fewer: acknowledged rows lost
    after their check (a restart since).
    """
    settle(run, admin, None)
    total = int(admin.query("SELECT count(*) FROM soak_rows WHERE run = %s", (run.run_id,))[0][0])
    out = dict(run.txn_counts)
    out["phantom rows"] = max(0, total - run.rows_verified)
    out["rows lost after their check"] = max(0, run.rows_verified - total)
    return out


def verifier(run: Run, admin: Admin, done: list[bool]) -> None:
    """Settle transactions every 15 s, so that the soak's own memory stays flat."""
    green = run.green
    while not done:
        for _ in range(150):
            if done:
                return
            green.sleep(0.1)
        try:
            settle(run, admin, 10.0)
        except Exception as exc:
            run.harness("verifier", exc)


def backends_left(run: Run, admin: Admin) -> tuple[int, float, int]:
    """Worker backends still there after 5 s; how long until none; other client backends."""
    started = now()
    while True:
        count = admin.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (run.app,)
        )[0][0]
        if count == 0 or now() - started > 5.0:
            break
        run.green.sleep(0.05)
    waited = now() - started
    others = admin.query(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid() AND application_name <> %s",
        (run.app,),
    )[0][0]
    return int(count), waited, int(others)


def _ms(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def summarise_gaps(run: Run) -> dict[str, Any]:
    total = sum(run.gap_buckets)
    if not total:
        return {}
    worst, when = run.gap_worst
    seen = 0
    p999 = 0
    for ms, count in enumerate(run.gap_buckets):
        seen += count
        if seen >= total * 0.999:
            p999 = ms + 1  # the bucket's upper edge
            break
    near = [f"{at:.2f} s {what}" for at, what in run.events if abs(at - (when - run.started)) < 0.5]
    return {
        "interval_ms": run.heartbeat_interval * 1000,
        "ticks": total,
        "worst_ms": round(worst * 1000, 1),
        "worst_at_s": round(when - run.started, 2),
        "p999_ms": p999,
        "over_50ms": sum(run.gap_buckets[50:]),
        "chaos_within_0.5s_of_worst": near[:10],
    }


def main() -> None:
    config = CONFIG
    green = Green(SCHED)
    faulthandler.enable()
    # A process that hangs in spite of everything prints every thread's stack and exits.
    faulthandler.dump_traceback_later(float(config["seconds"]) + 150, exit=True)
    legacy = config["impl"] == "legacy"
    core = None
    if legacy:
        import legacy as legacy_loader

        module = legacy_loader.load(SCHED)
        callback = getattr(module, f"{SCHED}_wait_callback")
        psycopg2.extensions.set_wait_callback(callback)
        # the baseline is 1.0.2 alone: psycopg2's own connect, 1.0.2's callback
        assert psycopg2.connect.__module__ == "psycopg2", psycopg2.connect
        assert psycopg2.extensions.get_wait_callback() is callback
    else:
        from psycogreen import core

        importlib.import_module(f"psycogreen.{SCHED}").patch_psycopg()
        core.set_cancel_timeout(CANCEL_BOUND)

    green.sleep(0)  # the hub runs from here on: counted before and after alike
    gc.collect()
    fds_before = open_fds()
    greenlets_before = live_greenlets()
    run = Run(config, green)
    worker = Worker(run, core)
    chaos = Chaos(run, legacy)
    done: list[bool] = []
    admin = Admin(run)
    beat = green.spawn(heartbeat, run, done)
    watch = green.spawn(monitor, run, admin, done)
    settle_admin = Admin(run)
    settler = green.spawn(verifier, run, settle_admin, done)
    supervisors = [green.spawn(worker.supervise, slot) for slot in run.slots]
    chaos_tasks = [
        green.spawn(chaos.instant),
        green.spawn(chaos.freezes),
        green.spawn(chaos.restarts),
        green.spawn(progress, run),
    ]
    warm = min(10.0, run.seconds * 0.2)
    green.sleep(warm)
    gc.collect()
    run.rss_start = rss()
    green.sleep(max(0.0, run.end - now()))
    run.stopping = True
    elapsed = now() - run.started
    queries = run.counts["queries"]

    for task in chaos_tasks:
        green.join(task, 60)
    with contextlib.suppress(Exception):
        control(run, "thaw")
    stop_started = now()
    for task in supervisors:
        green.join(task, max(0.1, stop_started + 20 - now()))
    stragglers = [s for s in run.slots if s.task is not None and not s.task.dead]
    for slot in stragglers:
        slot.kill_sent = now()  # reported as hung, not as an unexpected GreenletExit
        if slot.hung_reported != slot.gen:
            run.hung += 1
            run.sample("hung", {"slot": slot.index, "stack": stack_of(slot.task)})
        green.kill(slot.task)
    for task in supervisors:
        green.join(task, 5)
    done.append(True)
    green.join(watch, 30)
    green.join(settler, 30)
    settle_admin.close()
    chaos.admin.close()
    left, waited, others = backends_left(run, admin)
    rows = verify_rows(run, admin)
    admin.close()
    green.join(beat, 1)
    green.sleep(CANCEL_BOUND + 0.5)  # cancel requests still under way finish or give up
    gc.collect()
    rss_end = rss()
    fds_after = open_fds()
    greenlets_after = live_greenlets()
    run.rss_peak = max(run.rss_peak, rss_end)

    lost = [k for k in run.kills.values() if not k.get("landed")]
    for kill in lost[:20]:
        run.sample("kill that did not land", kill)
    must = {
        "mixed results": run.counts["mixed"],
        "acknowledged commits missing": rows.get("acked missing", 0)
        + rows.get("rows lost after their check", 0),
        "rows of commits failed before COMMIT": rows.get("failed rows", 0),
        "torn or unknown transactions": rows.get("torn", 0) + rows.get("phantom rows", 0),
        "client backends left after 5 s": left,
        "interrupted statements active after 1 s": run.still_active,
        "unexpected exceptions": sum(run.unexpected.values()),
        "kills that did not end the worker": len(lost),
        "hung operations": run.hung,
        "harness errors": run.harness_errors,
    }
    result = {
        "scheduler": SCHED,
        "impl": run.impl,
        "seconds": round(elapsed, 1),
        "clients": len(run.slots),
        "seed": config["seed"],
        "queries": queries,
        "queries_per_s": round(queries / elapsed, 1),
        "connects": run.counts["connects"],
        "commits": run.counts["commits"],
        "must_be_zero": must,
        "transactions": rows,
        "statements_checked": run.checked,
        "statements_checked_after_a_thaw": run.checked_after_thaw,
        "operational_errors": dict(run.messages.most_common(25)),
        "backends": {"waited_s": round(waited, 2), "other_client_backends": others},
        "chaos": {k: dict(v) for k, v in run.chaos.items() if v},
        "exceptions": dict(run.exceptions.most_common()),
        "unexpected": dict(run.unexpected),
        "latency_ms": {k: _ms(v) for k, v in run.latency.items()},
        "hub": summarise_gaps(run),
        "rss_mb": {
            "after_warmup": round(run.rss_start / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "peak": round(run.rss_peak / 2**20, 1),
            "growth": round((rss_end - run.rss_start) / 2**20, 1),
            "samples": run.rss_samples,
        },
        "fds": {"before": fds_before, "after": fds_after},
        "greenlets": {"before": greenlets_before, "after": greenlets_after},
        "freezes": [[round(a - run.started, 2), round(b - run.started, 2)] for a, b in run.freezes],
        "frozen_s": round(sum(e - s for s, e in run.freezes), 1),
        "restarts": run.restarts,
        "samples": dict(run.samples),
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
