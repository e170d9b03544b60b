# SPDX-License-Identifier: BSD-3-Clause
"""The API for backend authors: one :class:`Backend` record per scheduler, registered once.

A backend module is its scheduler's waits and primitives plus one call::

    BACKEND = Backend(name="myloop", wait_read=..., wait_write=..., can_switch=..., ...)
    myloop_wait_callback = register_backend(BACKEND)

Core builds the wait callback from the record, runs the poll loop, the cancel on every
interruption, the deadlines, and the fallback where the scheduler cannot switch (a thread
without a hub blocks on the socket; inside the hub the operation is bounded and reported).
Code above core (COPY, ``cancel()``, the pool) waits and wakes through the record of the
installed callback: :func:`active_backend`.

.. versionadded:: 1.1
"""

from __future__ import annotations

from psycogreen.core._backend import Backend, always, thread_spawn
from psycogreen.core._blocking import BLOCKING
from psycogreen.core._detect import installed_backend
from psycogreen.core._errors import CannotSwitchHere
from psycogreen.core._registry import backends, register_backend
from psycogreen.core._types import Event, PollingConnection, Task, WaitCallback, WaitFunc

__all__ = [
    "Backend",
    "CannotSwitchHere",
    "Event",
    "PollingConnection",
    "Task",
    "WaitCallback",
    "WaitFunc",
    "active_backend",
    "always",
    "backends",
    "current_backend",
    "register_backend",
    "thread_spawn",
]


def active_backend() -> Backend | None:
    """The backend of psycopg2's installed wait callback, ``None`` if psycogreen knows none.

    A known equivalent of another project (eventlet's own callback) gets its psycogreen
    backend imported, if installed.
    """
    return installed_backend()[0]


def current_backend() -> Backend:
    """The backend to wait and wake through now: the installed callback's, else ``blocking``.

    Never ``None``: without a psycogreen callback the program blocks in psycopg2 anyway, and
    so may code above core.
    """
    record = installed_backend()[0]
    return BLOCKING if record is None else record
