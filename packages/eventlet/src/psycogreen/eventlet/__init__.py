# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-eventlet: psycopg2 under eventlet.

Importing this module imports eventlet (and fails loudly if it is missing). The poll loop,
timeouts and cancellation live in :mod:`psycogreen.core`; this module only waits on eventlet's
hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from greenlet import GreenletExit, getcurrent

import eventlet
import eventlet.event
import eventlet.semaphore
from eventlet.hubs import _threadlocal
from eventlet.hubs.hub import READ, WRITE
from psycogreen.core import patch
from psycogreen.core.backend import Backend, CannotSwitchHere, Event, Task, register_backend
from psycogreen.eventlet.__about__ import __version__

__all__ = ["BACKEND", "__version__", "eventlet_wait_callback", "patch_psycopg"]


# What a timed wait's timer switches back with.
_EXPIRED = object()


def _wait(fd: int, evtype: str, timeout: float | None) -> bool:
    hub = getattr(_threadlocal, "hub", None)
    current = getcurrent()
    if hub is None or hub.greenlet is current:
        # No hub in this thread (core blocks the thread only, instead of starting a hub in
        # it), or the hub's own greenlet ("do not call blocking functions from the
        # mainloop"): core blocks the thread on the socket itself.
        raise CannotSwitchHere
    # The hot path (bench/ section 1): what trampoline() does, minus its argument handling
    # and, for a timed wait, the exception it throws in on expiry (the timer switches back
    # with a marker instead). The listener is removed on every way out, as trampoline does,
    # so that eventlet's fd-reuse bookkeeping (mark_as_reopened) never meets a stale one; a
    # closed fd is thrown in as IOClosed through current.throw.
    if timeout is not None:
        return _wait_timed(hub, current, fd, evtype, timeout)
    listener = hub.add(evtype, fd, current.switch, current.throw, None)
    try:
        hub.switch()
    finally:
        hub.remove(listener)
    return True


def _wait_timed(hub: Any, current: Any, fd: int, evtype: str, timeout: float) -> bool:  # noqa: ANN401
    timer = hub.schedule_call_global(timeout, current.switch, _EXPIRED)
    try:
        listener = hub.add(evtype, fd, current.switch, current.throw, None)
        try:
            # A stray switch returns neither marker and counts as ready: the loop polls again.
            return hub.switch() is not _EXPIRED
        finally:
            hub.remove(listener)
    finally:
        timer.cancel()


def _wait_read(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, READ, timeout)


def _wait_write(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, WRITE, timeout)


def _has_hub() -> bool:
    # A thread with no hub (a native thread, a tpool worker): core blocks that thread only
    # instead of starting a hub in it.
    return getattr(_threadlocal, "hub", None) is not None


def _can_switch() -> bool:
    # The hub's greenlet cannot switch to itself (eventlet: "do not call blocking functions
    # from the mainloop"): code it runs directly (a timer, a signal handler) cannot wait.
    hub = getattr(_threadlocal, "hub", None)
    return hub is not None and hub.greenlet is not getcurrent()


class _Event:
    """A resettable event: eventlet's own ``Event`` can be sent once only."""

    def __init__(self) -> None:
        self._event = eventlet.event.Event()

    def set(self) -> None:
        if not self._event.ready():
            self._event.send(True)  # noqa: FBT003 (eventlet's signature)

    def clear(self) -> None:
        if self._event.ready():
            self._event = eventlet.event.Event()

    def is_set(self) -> bool:
        return bool(self._event.ready())

    def wait(self, timeout: float | None = None) -> bool:
        event = self._event
        if event.ready():
            return True
        with eventlet.Timeout(timeout, False):  # noqa: FBT003 (eventlet's signature)
            event.wait()
        return bool(event.ready())


class _Task:
    """An eventlet green thread as a core task."""

    def __init__(self, func: Callable[[], object]) -> None:
        self._thread = eventlet.spawn(func)

    def join(self, timeout: float | None = None) -> None:
        with eventlet.Timeout(timeout, False):  # noqa: FBT003
            self._thread.wait()

    def kill(self) -> None:
        self._thread.kill()


def _event() -> Event:
    return _Event()


def _spawn(func: Callable[[], object]) -> Task:
    return _Task(func)


#: psycogreen's record of eventlet (:mod:`psycogreen.core.backend`).
BACKEND = Backend(
    name="eventlet",
    wait_read=_wait_read,
    wait_write=_wait_write,
    can_switch=_can_switch,
    has_hub=_has_hub,
    sleep=eventlet.sleep,
    event=_event,
    lock=eventlet.semaphore.Semaphore,
    spawn=_spawn,
    interrupt_reasons=((eventlet.Timeout, "timeout"), (GreenletExit, "kill")),
    # eventlet.monkey_patch() installs eventlet's own copy of the 2010 callback; psycogreen
    # 1.0.2's module had the same name as this one.
    equivalents=frozenset(
        {
            ("eventlet.support.psycopg2_patcher", "eventlet_wait_callback"),
            ("psycogreen.eventlet", "eventlet_wait_callback"),
        }
    ),
)
eventlet_wait_callback = register_backend(BACKEND)


def patch_psycopg(*, force: bool = False) -> None:
    """Make psycopg2 wait through eventlet's hub instead of blocking the process.

    Call it once, after ``eventlet.monkey_patch()``. eventlet's own psycopg2 callback, which
    ``monkey_patch()`` installs, is replaced; calling this again is a no-op.

    :param force: replace a wait callback installed by other code, or for another scheduler.
    :raises psycogreen.core.PatchConflictError: such a callback is installed and ``force`` is
        false.
    :raises psycogreen.core.PsycopgNotFoundError: psycopg2 is not installed.
    """
    patch("eventlet", force=force)
