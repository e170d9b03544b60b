# SPDX-License-Identifier: BSD-3-Clause
"""The logging adapter of the events: one log line per record, on the ``psycogreen`` logger."""

from __future__ import annotations

import logging

from psycogreen.core._records import EventRecord

__all__ = ["LogSubscriber"]


class LogSubscriber:
    """A subscriber that logs every record it gets as one line (:meth:`EventRecord.describe`).

    The record itself travels in the log record's ``extra`` as ``psycogreen_event``, for
    handlers that format it their own way.
    """

    __slots__ = ("level", "logger")

    def __init__(self, logger: logging.Logger, level: int) -> None:
        """Log on ``logger`` at ``level``."""
        self.logger = logger
        self.level = level

    def __call__(self, record: EventRecord) -> None:
        """Log ``record``."""
        if self.logger.isEnabledFor(self.level):
            self.logger.log(
                self.level,
                "psycogreen event: %s",
                record.describe(),
                extra={"psycogreen_event": record},
            )

    def __repr__(self) -> str:
        """Name the logger and the level."""
        return f"<LogSubscriber {self.logger.name} {logging.getLevelName(self.level)}>"
