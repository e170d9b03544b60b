# SPDX-License-Identifier: BSD-3-Clause
"""The events API without a scheduler: subscribing, delivery, the records, the pool's records.

What the slow paths emit is tested against a server under each scheduler
(``tests/green/test_events.py``); the pool's records, which the pool emits, are checked here to
reach subscribers and the adapters as documented.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from psycogreen.core import events
from tests.support.env import require

POOL_RECORDS = [
    events.PoolCheckoutWaited(pool="main", seconds=0.25, size=10, in_use=10, waiting=3),
    events.PoolCheckoutTimedOut(pool="main", seconds=30.0, size=10, in_use=10, waiting=7),
    events.PoolConnectionDiscarded(pool="main", reason="broken", pid=42, host="db1", port=5432),
    events.PoolReconnected(pool="main", attempts=2, seconds=0.1, pid=43, host="db1", port=5432),
]


@pytest.fixture
def seen() -> Iterator[list[events.EventRecord]]:
    found: list[events.EventRecord] = []
    with events.subscribed(found.append):
        yield found


def test_the_pool_records_reach_every_subscriber(seen: list[events.EventRecord]) -> None:
    assert events.listening()
    for record in POOL_RECORDS:
        events.emit(record)
    assert seen == POOL_RECORDS


def test_nobody_listens_once_unsubscribed() -> None:
    found: list[events.EventRecord] = []
    events.subscribe(found.append)
    events.subscribe(found.append)  # twice: still once
    events.emit(POOL_RECORDS[0])
    events.unsubscribe(found.append)
    events.emit(POOL_RECORDS[0])
    assert found == [POOL_RECORDS[0]]
    assert not events.listening()


def test_per_wait_records_go_to_their_subscribers_only(seen: list[events.EventRecord]) -> None:
    waits: list[events.EventRecord] = []
    record = events.WaitTimed(direction="read", seconds=0.001, ready=True)
    with events.subscribed(waits.append, waits=True):
        events.emit(record)
        events.emit(POOL_RECORDS[0])
    assert waits == [record, POOL_RECORDS[0]]
    assert seen == [POOL_RECORDS[0]]


def test_records_are_frozen_and_describe_themselves() -> None:
    record = POOL_RECORDS[2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.reason = "idle"  # type: ignore[misc]
    assert record.kind == "pool_connection_discarded"
    assert record.describe() == (
        "pool_connection_discarded pool=main reason=broken pid=42 host=db1 port=5432"
    )
    assert POOL_RECORDS[0].describe() == (
        "pool_checkout_waited pool=main seconds=0.25 size=10 in_use=10 waiting=3"
    )


def test_the_sampling_interval_is_a_positive_whole_number() -> None:
    for wrong in (0, -1, 1.5):
        with pytest.raises(ValueError, match="positive whole number"):
            events.set_wait_sampling(wrong)  # type: ignore[arg-type]
    events.set_wait_sampling(1)


def test_the_logging_adapter_logs_the_pool_records(caplog: pytest.LogCaptureFixture) -> None:
    subscriber = events.log_events(logging.WARNING)
    try:
        with caplog.at_level(logging.WARNING, logger="psycogreen"):
            events.emit(POOL_RECORDS[1])
    finally:
        events.unsubscribe(subscriber)
    line = "pool_checkout_timed_out pool=main seconds=30 size=10 in_use=10 waiting=7"
    assert caplog.messages == [f"psycogreen event: {line}"]
    assert caplog.records[0].psycogreen_event is POOL_RECORDS[1]


def test_the_prometheus_adapter_counts_the_pool_records() -> None:
    prometheus_client = require("prometheus_client")
    from psycogreen.core.prometheus import PrometheusEvents

    registry = prometheus_client.CollectorRegistry()
    metrics = PrometheusEvents(registry=registry)
    try:
        for record in POOL_RECORDS:
            events.emit(record)
    finally:
        metrics.close()
    value = registry.get_sample_value
    assert value("psycogreen_pool_checkout_wait_seconds_count", {"pool": "main"}) == 1.0
    assert value("psycogreen_pool_checkout_wait_seconds_sum", {"pool": "main"}) == 0.25
    assert value("psycogreen_pool_checkout_timeouts_total", {"pool": "main"}) == 1.0
    labels = {"pool": "main", "reason": "broken"}
    assert value("psycogreen_pool_connections_discarded_total", labels) == 1.0
    assert value("psycogreen_pool_reconnects_total", {"pool": "main"}) == 1.0
