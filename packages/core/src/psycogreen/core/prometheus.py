# SPDX-License-Identifier: BSD-3-Clause
"""Prometheus metrics from psycogreen's events, with ``prometheus_client``.

``pip install psycogreen-core[prometheus]``. Core never imports this module; importing it
imports ``prometheus_client``::

    from psycogreen.core.prometheus import PrometheusEvents

    metrics = PrometheusEvents()            # on prometheus_client's default registry
    # ... expose the registry as usual (prometheus_client.start_http_server, a WSGI app)

Labels are the records' kinds of outcome and reason, never a pid, host or statement: they stay
few. Per-wait timing (``waits=True``) adds a histogram of every wait, and its cost to every
wait (see :func:`psycogreen.core.events.subscribe`).

.. versionadded:: 1.1
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from psycogreen.core import events

__all__ = ["PrometheusEvents"]

# Seconds: cancels and connects take milliseconds when all is well, up to the cancel timeout or
# connect_timeout when not; waits, microseconds to the length of a query.
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAITS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


class PrometheusEvents:
    """Counters and histograms of psycogreen's events, kept up to date while subscribed.

    :param registry: where the metrics are registered (one instance per registry).
    :param namespace: the metrics' prefix.
    :param waits: also time every wait (``psycogreen_wait_seconds``).
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        namespace: str = "psycogreen",
        waits: bool = False,
    ) -> None:
        """Register the metrics and subscribe."""
        self._registry = registry
        self._namespace = namespace
        self.cancels = self._counter(
            "cancels", "Statements cancelled on the server", ["reason", "outcome"]
        )
        self.cancel_seconds = self._histogram(
            "cancel_seconds", "Time a cancel took", ["reason"], _SLOW
        )
        self.cancels_finished = self._counter(
            "cancels_finished", "Cancels finished in the background", ["outcome"]
        )
        self.deadlines = self._counter("deadlines", "psycogreen deadlines expired", ["operation"])
        self.connect_attempts = self._counter(
            "connect_attempts", "Connection attempts, per address", ["outcome"]
        )
        self.connect_seconds = self._histogram(
            "connect_seconds", "Time a connection attempt took", ["outcome"], _SLOW
        )
        self.hub_blocked = self._histogram(
            "hub_blocked_seconds",
            "Operations run by the scheduler's own loop, blocking every task",
            ["scheduler"],
            _SLOW,
        )
        self.loop_blocked = self._counter(
            "loop_blocked", "Loop blocked by psycopg outside the wait callback", ["cause"]
        )
        self.copies_interrupted = self._counter(
            "copies_interrupted", "COPY operations interrupted", ["reason", "outcome"]
        )
        self.pool_waits = self._histogram(
            "pool_checkout_wait_seconds",
            "Checkouts that waited for a connection",
            ["pool"],
            _SLOW,
        )
        self.pool_timeouts = self._counter(
            "pool_checkout_timeouts", "Checkouts that timed out", ["pool"]
        )
        self.pool_discarded = self._counter(
            "pool_connections_discarded", "Connections the pool closed", ["pool", "reason"]
        )
        self.pool_reconnects = self._counter(
            "pool_reconnects", "Connections the pool opened to replace others", ["pool"]
        )
        self.wait_seconds: Histogram | None = None
        if waits:
            self.wait_seconds = self._histogram(
                "wait_seconds", "Waits of the wait callback", ["direction"], _WAITS
            )
        events.subscribe(self, waits=waits)

    def _counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        return Counter(
            name, documentation, labels, namespace=self._namespace, registry=self._registry
        )

    def _histogram(
        self, name: str, documentation: str, labels: list[str], buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(
            name,
            documentation,
            labels,
            namespace=self._namespace,
            registry=self._registry,
            buckets=buckets,
        )

    def close(self) -> None:
        """Unsubscribe (the metrics stay registered, with their values)."""
        events.unsubscribe(self)

    def __call__(self, record: events.EventRecord) -> None:  # noqa: C901, PLR0912 (one branch per kind)
        """Count ``record``."""
        if isinstance(record, events.WaitTimed):
            if self.wait_seconds is not None:
                self.wait_seconds.labels(record.direction).observe(record.seconds)
        elif isinstance(record, events.StatementCancelled):
            self.cancels.labels(record.reason, record.outcome).inc()
            self.cancel_seconds.labels(record.reason).observe(record.seconds)
        elif isinstance(record, events.CancelFinished):
            self.cancels_finished.labels(record.outcome).inc()
        elif isinstance(record, events.DeadlineExpired):
            self.deadlines.labels(record.operation).inc()
        elif isinstance(record, events.ConnectAttempt):
            self.connect_attempts.labels(record.outcome).inc()
            self.connect_seconds.labels(record.outcome).observe(record.seconds)
        elif isinstance(record, events.HubBlocked):
            self.hub_blocked.labels(record.scheduler).observe(record.seconds)
        elif isinstance(record, events.LoopBlocked):
            self.loop_blocked.labels(record.cause).inc()
        elif isinstance(record, events.CopyInterrupted):
            self.copies_interrupted.labels(record.reason, record.outcome).inc()
        elif isinstance(record, events.PoolCheckoutWaited):
            self.pool_waits.labels(record.pool).observe(record.seconds)
        elif isinstance(record, events.PoolCheckoutTimedOut):
            self.pool_timeouts.labels(record.pool).inc()
        elif isinstance(record, events.PoolConnectionDiscarded):
            self.pool_discarded.labels(record.pool, record.reason).inc()
        elif isinstance(record, events.PoolReconnected):
            self.pool_reconnects.labels(record.pool).inc()
