# SPDX-License-Identifier: BSD-3-Clause
"""The shapes core works with: a connection, a backend's waits and primitives, a wait callback."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Event", "PollingConnection", "Task", "WaitCallback", "WaitFunc"]


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


class Event(Protocol):
    """A flag one task sets and others wait for, through the scheduler (``threading.Event``).

    ``wait`` suspends the calling task only; anything the scheduler throws into it (a timeout,
    a kill) propagates unchanged.
    """

    def set(self) -> None:
        """Set the flag and wake every waiter."""

    def clear(self) -> None:
        """Reset the flag."""

    def is_set(self) -> bool:
        """Whether the flag is set."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set; ``False`` if ``timeout`` seconds passed first."""


class Task(Protocol):
    """A task started through a backend's ``spawn``."""

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has ended, at most ``timeout`` seconds."""

    def kill(self) -> None:
        """Ask the task to end (a thread, which cannot be killed, is left to end by itself)."""
