# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen's events (``psycogreen.core.events``): one record per thing the slow paths do.

What each record promises is in ``docs/observability.md``. Every scenario subscribes a recorder
and makes one kind of event happen against the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_events
from tests.support.env import require

pytestmark = pytest.mark.postgres


def _only(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def _one(records: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _only(records, kind)
    assert len(found) == 1, records
    return found[0]


# --- cancels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "reason", "exc", "kept"),
    [
        ("deadline", "deadline", "QueryCanceled", True),
        ("timeout", "timeout", "Timeout", False),
        ("kill", "kill", "GreenletExit", False),
        ("ctrl-c", "ctrl-c", "KeyboardInterrupt", False),
    ],
)
def test_a_cancelled_statement_is_reported_with_its_reason(  # noqa: PLR0917
    scheduler: str, run_green: RunGreen, how: str, reason: str, exc: str, kept: bool
) -> None:
    out = run_green(scheduler, scenarios_events.cancelled, how=how)
    assert out["exc"] == exc, out
    record = _one(out["records"], "statement_cancelled")
    assert record["reason"] == reason, record
    assert record["outcome"] == "sent", record
    assert record["kept"] is kept, record
    assert bool(out["closed"]) is not kept, out
    # The connection's server, never the statement.
    assert record["pid"] == out["pid"], record
    assert record["host"] == out["host"], record
    assert record["port"] == int(out["port"]), record
    assert 0 < record["seconds"] < 0.5, record
    assert 0.2 <= record["at"] < 0.2 + 0.5, record  # emitted as the cancel ends
    assert "pg_sleep" not in repr(record)
    deadlines = _only(out["records"], "deadline_expired")
    if how == "deadline":
        assert deadlines == [
            {**deadlines[0], "operation": "statement", "limit": 0.2, "pid": out["pid"]}
        ], out
        assert deadlines[0]["at"] <= record["at"], out
    else:
        assert deadlines == [], out


def test_a_cancel_left_to_the_background_reports_its_outcome_later(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.frozen_cancel, how="timeout")
    assert out["exc"] == "Timeout", out
    record = _one(out["records"], "statement_cancelled")
    assert record["reason"] == "timeout", record
    assert record["outcome"] == "background", record
    assert record["kept"] is False, record
    assert record["pid"] == out["pid"], record
    # The interrupt went on after the grace (50 ms), on time.
    assert 0.05 <= record["seconds"] < 0.05 + 0.1, record
    later = _one(out["records"], "cancel_finished")
    assert later["cancel_id"] == record["cancel_id"], out
    assert later["outcome"] == "sent", later  # the network came back within the cancel timeout
    assert later["pid"] == out["pid"], later
    assert later["at"] > record["at"] + 0.2, out  # once thawed (0.3 s after the interrupt)
    assert out["backend_gone"] is True, out
    assert out["leaked"] == 0, out


def test_a_cancel_that_cannot_reach_the_server_is_reported_failed(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.frozen_cancel, how="deadline")
    assert out["exc"] == "OperationalError", out
    deadline = _one(out["records"], "deadline_expired")
    assert deadline["operation"] == "statement", deadline
    assert deadline["limit"] == 0.3, deadline
    record = _one(out["records"], "statement_cancelled")
    assert record["reason"] == "deadline", record
    assert record["outcome"] == "failed", record
    assert record["kept"] is False, record
    assert 0.5 <= record["seconds"] < 0.5 + 0.2, record  # the cancel timeout, then gave up
    assert _only(out["records"], "cancel_finished") == [], out
    assert out["leaked"] == 0, out


# --- connect attempts -----------------------------------------------------------------------------


def test_each_connect_attempt_is_reported_and_a_failover_shows(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.failover)
    refused, frozen, server = out["ports"]
    attempts = _only(out["records"], "connect_attempt")
    assert [(a["port"], a["outcome"]) for a in attempts] == [
        (refused, "failed"),
        (frozen, "timed_out"),
        (server, "connected"),
    ], attempts
    assert all(a["host"] == "127.0.0.1" and a["limit"] == 2.0 for a in attempts[:2]), attempts
    assert "Connection refused" in attempts[0]["error"], attempts
    assert "timeout expired" in attempts[1]["error"], attempts
    assert 2.0 <= attempts[1]["seconds"] < 2.0 + 0.5, attempts
    assert attempts[2]["pid"] == out["pid"], attempts
    assert attempts[2]["error"] is None, attempts
    assert all(a["pid"] is None for a in attempts[:2]), attempts
    # The timed-out attempt's deadline is reported too, before it.
    deadline = _one(out["records"], "deadline_expired")
    assert deadline["operation"] == "connect", deadline
    assert deadline["port"] == frozen, deadline
    assert "password" not in repr(out["records"])


def test_a_connect_deadline_is_reported(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_events.connect_deadline)
    assert out["exc"] == "OperationalError", out
    kinds = [r["kind"] for r in out["records"]]
    assert kinds == ["deadline_expired", "connect_attempt"], out
    deadline, attempt = out["records"]
    assert deadline["operation"] == "connect", deadline
    assert 0.25 < deadline["limit"] <= 0.3, deadline
    assert attempt["outcome"] == "timed_out", attempt
    assert attempt["port"] == out["proxy_port"], attempt


# --- the hub's own context ----------------------------------------------------------------------


def test_an_operation_run_by_the_hub_is_reported(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_events.hub_blocked)
    record = _one(out["records"], "hub_blocked")
    assert record["scheduler"] == scheduler, record
    assert record["pid"] == out["pid"], record
    assert record["bound"] == 5.0, record  # HUB_BLOCK_TIMEOUT: the rollback had no deadline
    assert 0 < record["seconds"] <= out["blocked"], record


# --- COPY -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "how"), [("in", "timeout"), ("out", "timeout"), ("in", "deadline")]
)
def test_an_interrupted_copy_is_reported(
    scheduler: str, run_green: RunGreen, direction: str, how: str
) -> None:
    out = run_green(scheduler, scenarios_events.copy_interrupted, direction=direction, how=how)
    record = _one(out["records"], "copy_interrupted")
    assert record["reason"] == how, record
    assert record["phase"] == direction, record
    assert record["outcome"] == "stopped", record
    assert record["pid"] == out["pid"], record
    assert 0 < record["seconds"] < 2.0, record  # within the cancel timeout
    assert out["closed"] == 0, out
    assert out["after"] == 42, out  # the connection stays usable
    deadlines = _only(out["records"], "deadline_expired")
    assert [d["operation"] for d in deadlines] == (["copy"] if how == "deadline" else []), out


# --- per-wait timing ----------------------------------------------------------------------------


def test_per_wait_timing_swaps_the_callback_only_while_subscribed(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.waits, queries=20)
    normal = f"psycogreen.{scheduler}.{scheduler}_wait_callback"
    assert out["normal"] == normal, out
    assert out["with_plain_subscriber"] == normal, out  # an ordinary subscriber costs no wait
    assert out["with_wait_subscriber"] == normal + "_timed", out
    assert out["is_patched"] is True, out
    assert out["scheduler"] == scheduler, out
    assert out["after_unsubscribe"] == normal, out
    assert out["partial_kept"] is True, out
    assert out["partial_timed"] == normal + "_timed", out
    waits = _only(out["records"], "wait_timed")
    assert {w["kind"] for w in out["records"]} == {"wait_timed", "connect_attempt"}, out
    # connect (a few), pg_sleep, 20 queries, commit: a read wait each at least.
    reads = [w for w in waits if w["direction"] == "read"]
    assert len(reads) >= 22, len(reads)
    assert all(w["seconds"] >= 0 and w["ready"] is True for w in waits), waits
    assert max(w["seconds"] for w in reads) >= 0.05, reads  # the pg_sleep(0.05)
    assert {w["pid"] for w in waits} == {None, out["pid"]}, waits  # None while connecting
    assert "wait_timed" not in out["plain_kinds"], out  # per-wait records only if asked for


def test_per_wait_timing_samples(scheduler: str, run_green: RunGreen) -> None:
    every = run_green(scheduler, scenarios_events.waits, sample=1, queries=40)
    sampled = run_green(scheduler, scenarios_events.waits, sample=4, queries=40)
    n_every = len(_only(every["records"], "wait_timed"))
    n_sampled = len(_only(sampled["records"], "wait_timed"))
    # One wait in four is timed; the two runs' numbers of waits differ by a few (how the
    # server's answers split into reads), so a quarter of the first run's, within a quarter.
    assert 0.75 * n_every / 4 <= n_sampled <= 1.25 * n_every / 4 + 1, (n_every, n_sampled)
    assert n_every >= 40, n_every


# --- subscribers and the logging adapter -------------------------------------------------------


def test_a_failing_subscriber_changes_nothing_and_is_logged_once(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.failing_subscriber)
    assert out["results"] == ["QueryCanceled", "QueryCanceled"], out
    assert out["errors_logged"] == 1, out
    assert out["kinds"].count("statement_cancelled") == 2, out


def test_the_logging_adapter_logs_a_line_per_event_while_subscribed(
    scheduler: str, run_green: RunGreen
) -> None:
    out = run_green(scheduler, scenarios_events.logged)
    assert out["before"] == [], out  # off by default
    lines = out["during"]
    assert len(lines) == 2, out
    assert lines[0].startswith("psycogreen event: deadline_expired operation=statement"), lines
    assert lines[1].startswith("psycogreen event: statement_cancelled "), lines
    assert "reason=deadline outcome=sent" in lines[1], lines
    assert out["extra"] == ["DeadlineExpired", "StatementCancelled"], out
    assert out["after"] == lines, out  # nothing once unsubscribed


# --- the adapters, with the real libraries ----------------------------------------------------


def test_the_prometheus_adapter_counts_and_times(scheduler: str, run_green: RunGreen) -> None:
    require("prometheus_client")
    out = run_green(scheduler, scenarios_events.prometheus)
    samples = out["samples"]
    cancels = {k: v for k, v in samples.items() if k.startswith("psycogreen_cancels_total,")}
    assert cancels == {
        "psycogreen_cancels_total,outcome=sent,reason=deadline": 1.0,
        "psycogreen_cancels_total,outcome=sent,reason=timeout": 1.0,
    }, samples
    assert samples["psycogreen_deadlines_total,operation=statement"] == 1.0, samples
    assert samples["psycogreen_connect_attempts_total,outcome=connected"] == 1.0, samples
    assert samples["psycogreen_cancel_seconds_count,reason=deadline"] == 1.0, samples
    assert 0 < samples["psycogreen_cancel_seconds_sum,reason=deadline"] < 0.5, samples
    waits = samples["psycogreen_wait_seconds_count,direction=read"]
    assert waits >= 3, samples  # connect, and the two statements
    assert "# TYPE psycogreen_cancels_total counter" in out["text"], out["text"]


def test_the_opentelemetry_adapter_adds_span_events(scheduler: str, run_green: RunGreen) -> None:
    require("opentelemetry.sdk")
    out = run_green(scheduler, scenarios_events.opentelemetry)
    spans = {s["name"]: s["events"] for s in out["spans"]}
    names = [e["name"] for e in spans["request"]]
    assert names == [
        "psycogreen.connect_attempt",
        "psycogreen.deadline_expired",
        "psycogreen.statement_cancelled",
        "psycogreen.statement_cancelled",
    ], spans
    cancel = spans["request"][2]["attributes"]
    assert cancel["psycogreen.reason"] == "deadline", cancel
    assert cancel["psycogreen.outcome"] == "sent", cancel
    assert cancel["db.system"] == "postgresql", cancel
    assert cancel["server.address"] == "127.0.0.1", cancel
    assert cancel["psycogreen.pid"] == out["pid"], cancel
    assert spans["request"][3]["attributes"]["psycogreen.reason"] == "timeout", spans
    assert spans["after"] == [], spans  # closed: no more span events
