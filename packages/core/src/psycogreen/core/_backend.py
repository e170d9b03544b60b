# SPDX-License-Identifier: BSD-3-Clause
"""The backend record: everything core needs of a scheduler, in one typed value.

A backend module builds one :class:`Backend` and registers it; core owns the loop, the cancel,
the deadlines and every fallback, and asks the record only for the scheduler's primitives
(anyio's ``AsyncBackend`` is the model: one interface, not parallel tables).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from psycogreen.core import _waits
from psycogreen.core._records import CancelReason
from psycogreen.core._types import Event, Task, WaitFunc

__all__ = ["Backend", "always", "thread_spawn", "waits_here"]


def always() -> bool:
    """``True``: the default of the context checks of a :class:`Backend`."""
    return True


class _Thread:
    """A daemon thread as a :class:`~psycogreen.core._types.Task`."""

    def __init__(self, func: Callable[[], object]) -> None:
        self._thread = threading.Thread(target=func, name="psycogreen", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        """Threads cannot be killed: the task is expected to notice that it should stop."""


def thread_spawn(func: Callable[[], object]) -> Task:
    """Run ``func`` in a daemon thread (the scheduler-free backend's ``spawn``)."""
    return _Thread(func)


@dataclass(frozen=True)
class Backend:
    """What core needs of one scheduler.

    .. versionadded:: 1.1
    """

    #: The scheduler's name: ``"gevent"``, ``"eventlet"``, ... (``psycogreen-<name>``).
    name: str
    #: Suspend the calling task until an fd is readable (see :class:`~psycogreen.core.WaitFunc`).
    #: Where the scheduler cannot switch, raise
    #: :class:`~psycogreen.core.backend.CannotSwitchHere` before waiting: core then blocks the
    #: thread itself (the wait looks the hub up anyway, so the check costs nothing).
    wait_read: WaitFunc
    #: Suspend the calling task until an fd is writable.
    wait_write: WaitFunc
    #: Whether the calling code can suspend through the scheduler now. False inside the
    #: scheduler's own loop (its hub greenlet: a loop callback, a signal handler or a finalizer
    #: the hub runs) and in a thread with no scheduler; core then blocks the thread itself.
    can_switch: Callable[[], bool] = always
    #: Whether this thread has a running scheduler at all. Where it has none (a native thread,
    #: a thread pool's worker) nothing else can run here, and blocking the thread is right;
    #: inside the hub it blocks every task, so core bounds it and reports it.
    has_hub: Callable[[], bool] = always
    #: Suspend the calling task for ``seconds``.
    sleep: Callable[[float], None] = time.sleep
    #: A new :class:`~psycogreen.core._types.Event` of the scheduler.
    event: Callable[[], Event] = threading.Event
    #: A new mutual-exclusion lock of the scheduler, held across switches.
    lock: Callable[[], AbstractContextManager[object]] = threading.Lock
    #: Start a background task; ``None`` where the scheduler has no tasks of its own (code
    #: above core then does its background work in the calling task).
    spawn: Callable[[Callable[[], object]], Task] | None = thread_spawn
    #: Why COPY cannot run cooperatively under this scheduler, or ``None`` if it can.
    copy_refusal: str | None = None
    #: Whether a cancel request may wait through the waits (``conn.cancel()``); false where the
    #: waits only work in a narrower context than any code that may cancel (uWSGI's requests).
    cancel_waits: bool = True
    #: Exceptions that, thrown into a wait, cancel the statement and keep the connection
    #: (psycopg2 raises ``QueryCanceled``): Ctrl-C for the scheduler-free callback.
    keep_connection_on: tuple[type[BaseException], ...] = ()
    #: What the exceptions the scheduler throws into a waiting task mean, for the events
    #: (:mod:`psycogreen.core.events`): ``((gevent.Timeout, "timeout"), (GreenletExit,
    #: "kill"))``. Ctrl-C is core's to name; any other exception is ``"error"``.
    interrupt_reasons: tuple[tuple[type[BaseException], CancelReason], ...] = ()
    #: ``(module, qualname)`` of other projects' callbacks for this scheduler that psycogreen's
    #: supersedes when patching, instead of refusing (eventlet's own, psycogreen 1.0.2's).
    equivalents: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    #: Whether the running program uses this scheduler (read from ``sys.modules``, never by
    #: importing it): :func:`~psycogreen.core.detect_scheduler` asks every backend.
    in_use: Callable[[], bool] | None = None
    #: The wait callback's ``__name__`` and ``__module__`` (the 1.x names): by default
    #: ``<name>_wait_callback`` in ``psycogreen.<name>``.
    callback_name: str = ""
    callback_module: str = ""


def waits_here(backend: Backend) -> tuple[WaitFunc, WaitFunc]:
    """The waits code that drives libpq itself (COPY, a cancel) uses here and now.

    The backend's where the scheduler can switch; elsewhere (a thread with no hub, the hub's
    own greenlet) waits that block this thread, as the wait callback does.
    """
    if backend.can_switch():
        return backend.wait_read, backend.wait_write
    return _waits.wait_read, _waits.wait_write
