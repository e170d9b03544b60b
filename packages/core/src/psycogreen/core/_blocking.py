# SPDX-License-Identifier: BSD-3-Clause
"""The scheduler-free backend, for programs with no coroutine scheduler.

It waits with ``poll(2)`` and turns Ctrl-C during a query into a server-side cancel: psycopg2
raises ``QueryCanceled`` and the connection stays usable after ``rollback()``.
"""

from __future__ import annotations

from psycogreen.core._backend import Backend
from psycogreen.core._registry import register_backend
from psycogreen.core._waits import wait_read, wait_write

__all__ = ["BLOCKING", "wait_callback"]

BLOCKING = Backend(
    name="blocking",
    wait_read=wait_read,
    wait_write=wait_write,
    keep_connection_on=(KeyboardInterrupt,),
    callback_name="wait_callback",
    callback_module="psycogreen.core",
)

wait_callback = register_backend(BLOCKING)
