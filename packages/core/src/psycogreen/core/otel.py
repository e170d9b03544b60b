# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen's events as OpenTelemetry span events, on the span current where they happen.

``pip install psycogreen-core[opentelemetry]`` (the API only; the application brings its SDK
and exporter). Core never imports this module; importing it imports ``opentelemetry.trace``::

    from psycogreen.core.otel import SpanEvents

    SpanEvents()  # from now on, a cancel inside a traced request is an event of its span

A record becomes the event ``psycogreen.<kind>`` with its fields as ``psycogreen.<field>``
attributes, and the server as ``db.system``, ``server.address`` and ``server.port``. An
event with no recording span current (a background cancel's follow-up, gevent's monitor
thread) is dropped.

.. versionadded:: 1.1
"""

from __future__ import annotations

from dataclasses import fields

import opentelemetry.trace as trace  # noqa: PLR0402 (mypy resolves the submodule, not the namespace)
from opentelemetry.util.types import AttributeValue

from psycogreen.core import events

__all__ = ["SpanEvents", "attributes"]


def attributes(record: events.EventRecord) -> dict[str, AttributeValue]:
    """The span-event attributes of ``record`` (``None`` fields left out)."""
    out: dict[str, AttributeValue] = {"db.system": "postgresql"}
    if record.host is not None:
        out["server.address"] = record.host
    if record.port is not None:
        out["server.port"] = record.port
    for item in fields(record):
        value = getattr(record, item.name)
        if item.name in {"host", "port"} or value is None:
            continue
        out[f"psycogreen.{item.name}"] = value
    return out


class SpanEvents:
    """A subscriber adding each record to the current span as an event.

    :param waits: also add an event per timed wait (many: one per wait of every query).
    """

    def __init__(self, *, waits: bool = False) -> None:
        """Subscribe."""
        events.subscribe(self, waits=waits)

    def close(self) -> None:
        """Unsubscribe."""
        events.unsubscribe(self)

    def __call__(self, record: events.EventRecord) -> None:
        """Add ``record`` to the current span, if it is recording."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(f"psycogreen.{record.kind}", attributes(record))
