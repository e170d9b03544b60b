# SPDX-License-Identifier: BSD-3-Clause
"""Which task is driving which connection: the in-flight bookkeeping the guard and COPY read.

psycopg2 holds a connection's mutex (``conn->lock``) for as long as the wait callback drives
it, so this is exactly the window in which another greenlet of the same OS thread must not
touch the connection: it would block the whole thread in ``pthread_mutex_lock`` (psycopg2
``pqpath.c``). One set and one delete per operation, none per wait.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ENDING", "current_task", "inflight", "other_task", "root"]

#: The running greenlet (the thread's main greenlet outside any); ``None`` without greenlet.
current_task: Callable[[], object]
#: The exceptions that end a task (a kill, Ctrl-C, an exit), rather than interrupt what it does.
ENDING: tuple[type[BaseException], ...]
try:
    # Not a scheduler: greenlet is the coroutine primitive under gevent and eventlet alike.
    from greenlet import GreenletExit
    from greenlet import getcurrent as current_task

    ENDING = (GreenletExit, KeyboardInterrupt, SystemExit)
except ImportError:  # pragma: no cover (no greenlets: only native threads exist)
    ENDING = (KeyboardInterrupt, SystemExit)

    def current_task() -> object:
        return None


#: ``id(conn)`` -> the greenlet (``None`` without greenlet) for every connection that the wait
#: callback, or core's own libpq driving (COPY), is working on.
inflight: dict[int, object] = {}


def root(task: object) -> object:
    """The main greenlet of ``task``'s thread.

    ``_thread.get_ident`` cannot tell threads apart: gevent's monkey-patching makes it return
    a number per greenlet.
    """
    parent = getattr(task, "parent", None)
    while parent is not None:
        task, parent = parent, getattr(parent, "parent", None)
    return task


def other_task(conn: object) -> object | None:
    """The other greenlet of this thread that is using ``conn`` now, or ``None``.

    ``None`` too when the connection is driven from another OS thread: psycopg2's mutex
    serialises threads correctly, blocking the waiting thread only.
    """
    task = inflight.get(id(conn))
    if task is None:
        return None  # idle, or driven where there are no greenlets (threads only)
    current = current_task()
    if task is current:
        return None  # pragma: no cover (the owner is suspended in the callback: it cannot call)
    if root(task) is not root(current):
        return None
    return task
