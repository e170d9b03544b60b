# SPDX-License-Identifier: BSD-3-Clause
"""The shapes core works with: a connection, a backend's wait, a wait callback."""

from __future__ import annotations

from typing import Protocol

__all__ = ["PollingConnection", "WaitCallback", "WaitFunc"]


class PollingConnection(Protocol):
    """What the poll loop needs of a psycopg2 connection."""

    def poll(self) -> int:
        """Advance the connection; return one of the ``POLL_*`` states."""

    def fileno(self) -> int:
        """Return the connection's current socket."""


class WaitFunc(Protocol):
    """A backend's wait: block the current task (not the process) until ``fd`` is ready.

    It returns ``True`` when ``fd`` is ready and ``False`` when ``timeout`` seconds passed
    first. With ``timeout=None`` it waits without a limit and returns ``True``. Anything the
    scheduler throws into the waiting task (a timeout, a kill) propagates unchanged.
    """

    def __call__(self, fd: int, timeout: float | None = None, /) -> bool:
        """Wait for ``fd``."""


class WaitCallback(Protocol):
    """A psycopg2 wait callback: ``callback(conn)``, as ``set_wait_callback`` expects.

    psycogreen's callbacks also accept ``timeout``: a deadline in seconds for the whole
    operation (bind it with :func:`functools.partial`).
    """

    def __call__(self, conn: PollingConnection, timeout: float | None = None) -> None:
        """Drive ``conn`` until its current operation is complete."""
