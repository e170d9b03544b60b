# SPDX-License-Identifier: BSD-3-Clause
"""The soak's own accounting, without a server: every must-be-0 count can fire.

A check that could never count anything would pass every soak. These feed the soak's
classification and verification code (bench/soak_child.py) the cases it must flag and the
ones it must let through, with a stand-in scheduler.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import greenlet
import psycopg2
import psycopg2.errors
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> Any:
    spec = importlib.util.spec_from_file_location(
        "soak_child_under_test", ROOT / "bench" / "soak_child.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load()


class FakeTimeout(BaseException):
    pass


class FakeGreen:
    name = "fake"
    Exit = greenlet.GreenletExit
    Timeout = FakeTimeout

    def sleep(self, seconds: float) -> None:
        pass


def make_run(**config: Any) -> Any:
    base = {"impl": "current", "run_id": "t1", "seed": 1, "seconds": 10, "clients": 2}
    return soak.Run({**base, **config}, FakeGreen())


@pytest.fixture
def run() -> Any:
    return make_run()


@pytest.fixture
def worker(run: Any) -> Any:
    return soak.Worker(run, None)


def statement_slot(run: Any) -> Any:
    slot = run.slots[0]
    slot.statement = (1234, "t1:0.1.1", "long")
    return slot


def test_a_reply_with_another_token_is_mixed(run: Any, worker: Any) -> None:
    slot = run.slots[0]
    worker.verify(slot, "short", [("t1:0.1.1", 1)], [("t1:0.1.1", 1)])
    assert run.counts["mixed"] == 0
    worker.verify(slot, "short", [("t1:0.1.1", 1)], [("t1:1.1.7", 7)])
    worker.verify(slot, "rows", [("a", 1), ("a", 2)], [("a", 1)])
    assert run.counts["mixed"] == 2


def test_the_armed_timeout_itself_is_legitimate(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    mine = FakeTimeout()
    armed = soak.Armed(soak.Order("timeout", 0.1, "long"), timeouts=[mine])
    worker.failed(slot, mine, armed)
    assert not run.unexpected
    assert run.chaos["timeout"]["landed"] == 1
    assert len(run.checks) == 1  # the statement it hit is checked 1 s later
    assert run.checks[0].pid == 1234


def test_a_timeout_the_operation_did_not_arm_is_unexpected(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    armed = soak.Armed(soak.Order("timeout", 0.1, "long"), timeouts=[FakeTimeout()])
    worker.failed(slot, FakeTimeout(), armed)  # another Timeout object
    worker.failed(slot, FakeTimeout(), soak.Armed())  # nothing armed
    assert sum(run.unexpected.values()) == 2


class Connection:
    def __init__(self, closed: int) -> None:
        self.closed = closed


def test_query_canceled_only_under_a_deadline(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    slot.conn = Connection(closed=0)
    deadline = soak.Armed(soak.Order("deadline", 0.1, "long"), deadline=True)
    worker.failed(slot, psycopg2.errors.QueryCanceled("canceling statement"), deadline)
    assert not run.unexpected
    assert run.chaos["deadline"]["QueryCanceled"] == 1
    assert run.chaos["deadline"]["connection kept"] == 1
    worker.failed(slot, psycopg2.errors.QueryCanceled("canceling statement"), soak.Armed())
    assert run.unexpected == {"psycopg2.errors.QueryCanceled": 1}


def test_a_deadline_must_keep_the_connection(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    slot.conn = Connection(closed=2)
    deadline = soak.Armed(soak.Order("deadline", 0.1, "long"), deadline=True)
    worker.failed(slot, psycopg2.errors.QueryCanceled("canceling statement"), deadline)
    assert run.unexpected == {"psycopg2.errors.QueryCanceled": 1}


def test_operational_errors_are_ambient_other_types_are_not(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    worker.failed(slot, psycopg2.OperationalError("server closed the connection"), soak.Armed())
    worker.failed(slot, psycopg2.errors.AdminShutdown("terminating connection"), soak.Armed())
    assert not run.unexpected
    worker.failed(slot, psycopg2.InterfaceError("connection already closed"), soak.Armed())
    worker.failed(slot, psycopg2.DatabaseError("no message from the libpq"), soak.Armed())
    worker.failed(slot, ValueError("bad"), soak.Armed())
    assert sum(run.unexpected.values()) == 3
    assert not run.checks  # the server ended those statements itself


def test_a_kill_nobody_sent_is_unexpected(run: Any, worker: Any) -> None:
    slot = statement_slot(run)
    slot.kill_sent = soak.now()
    worker.killed(slot)
    assert not run.unexpected
    assert run.chaos["kill"]["landed"] == 1
    other = run.slots[1]
    worker.killed(other)
    assert sum(run.unexpected.values()) == 1


def test_a_kill_the_worker_survived_is_counted(run: Any, worker: Any) -> None:
    chaos = soak.Chaos(run, legacy=False)
    delivered, lost = run.slots
    for slot in (delivered, lost):
        slot.task = object()
        slot.busy_since = soak.now()
    killed: list[Any] = []
    run.green.kill = killed.append
    chaos.send_kill(delivered)
    chaos.send_kill(lost)
    assert killed == [delivered.task, lost.task]
    worker.killed(delivered)  # the other one caught something else and went on
    assert [k["slot"] for k in run.kills.values() if not k.get("landed")] == [lost.index]


class Table:
    """The soak_rows table as the verification queries see it."""

    def __init__(self, rows: list[tuple[str, list[int]]]) -> None:
        self.rows = dict(rows)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        assert "soak_rows" in sql
        assert params[0] == "t1"
        if "count(*)" in sql:
            return [(sum(len(ns) for ns in self.rows.values()),)]
        return [(token, ns) for token, ns in self.rows.items() if token in params[1]]


def test_rows_of_every_outcome(run: Any) -> None:
    run.txns = {
        "acked-ok": [2, "acked", 1.0],
        "acked-lost": [2, "acked", 1.0],
        "acked-torn": [3, "acked", 1.0],
        "failed-clean": [1, "open", 1.0],
        "failed-committed": [2, "open", 1.0],
        "doubt-yes": [1, "committing", 1.0],
        "doubt-no": [1, "committing", None],
    }
    table = Table(
        [
            ("acked-ok", [1, 2]),
            ("acked-torn", [1, 3]),
            ("failed-committed", [1, 2]),
            ("doubt-yes", [1]),
            ("nobody-wrote-this", [1]),
        ]
    )
    out = soak.verify_rows(run, table)
    assert out["acked"] == 3
    assert out["acked missing"] == 2  # lost, and torn
    assert out["torn"] == 1
    assert out["failed before COMMIT"] == 2
    assert out["failed rows"] == 2
    assert out["in doubt"] == 2
    assert out["in doubt, committed"] == 1
    assert out["phantom rows"] == 1
    assert out["rows lost after their check"] == 0
    assert not run.txns  # settled, and forgotten


def test_settled_as_the_run_goes_then_counted_again_at_the_end(run: Any) -> None:
    now = soak.now()
    run.txns = {
        "old": [2, "acked", now - 20],
        "recent": [1, "acked", now],
        "running": [1, "open", None],
    }
    table = Table([("old", [1, 2]), ("recent", [1])])
    soak.settle(run, table, 10.0)
    assert set(run.txns) == {"recent", "running"}
    assert run.txn_counts["acked"] == 1
    # a restart loses the checked rows (or a late commit adds some): the totals disagree
    table.rows["old"] = [1]
    table.rows["late"] = [1, 2, 3]
    out = soak.verify_rows(run, table)
    assert out["acked"] == 2
    assert out["phantom rows"] == 2  # 5 rows in the table, 3 checked


def test_a_freeze_moves_the_check_after_the_thaw() -> None:
    check = soak.Check(due=11.0, at=10.0, pid=1, token="t", kind="timeout")
    assert not soak.postpone(check, [(0.0, 5.0)], 11.0)  # over before the interrupt
    assert soak.postpone(check, [(9.5, 12.0)], 11.0)  # frozen at the interrupt
    assert check.due == 13.0
    assert check.after_thaw
    assert not soak.postpone(check, [(9.5, 12.0)], 13.0)
    later = soak.Check(due=11.0, at=10.0, pid=1, token="t", kind="kill")
    assert soak.postpone(later, [(10.5, 11.5)], 11.0)  # frozen right after it
    assert later.due == 12.5
