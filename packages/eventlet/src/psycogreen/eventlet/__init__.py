# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-eventlet: psycopg2 under eventlet.

Importing this module imports eventlet (and fails loudly if it is missing). The poll loop,
timeouts and cancellation live in :mod:`psycogreen.core`; this module only waits on eventlet's
hub.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent

from eventlet.hubs import _threadlocal
from eventlet.hubs.hub import READ, WRITE
from psycogreen.core import make_wait_callback, patch, register_backend
from psycogreen.core._blocking import _wait_read as _blocking_read
from psycogreen.core._blocking import _wait_write as _blocking_write
from psycogreen.eventlet.__about__ import __version__

__all__ = ["__version__", "eventlet_wait_callback", "patch_psycopg"]


# What a timed wait's timer switches back with.
_EXPIRED = object()


def _wait(fd: int, evtype: str, timeout: float | None) -> bool:
    hub = getattr(_threadlocal, "hub", None)
    if hub is None:
        # A thread with no hub (a native thread, a tpool worker): nothing else can run here,
        # so block this thread only instead of starting a hub in it.
        return (_blocking_read if evtype == READ else _blocking_write)(fd, timeout)
    # The hot path (bench/ section 1): what trampoline() does, minus its argument handling
    # and, for a timed wait, the exception it throws in on expiry (the timer switches back
    # with a marker instead). The listener is removed on every way out, as trampoline does,
    # so that eventlet's fd-reuse bookkeeping (mark_as_reopened) never meets a stale one; a
    # closed fd is thrown in as IOClosed through current.throw.
    current = getcurrent()
    if hub.greenlet is current:
        message = "do not call blocking functions from the mainloop"
        raise RuntimeError(message)
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


eventlet_wait_callback = make_wait_callback(
    _wait_read, _wait_write, name="eventlet_wait_callback", module=__name__
)


def _can_wait() -> bool:
    # The hub's greenlet cannot switch to itself (eventlet: "do not call blocking functions
    # from the mainloop"): code it runs directly (a timer, a signal handler) cannot wait.
    hub = getattr(_threadlocal, "hub", None)
    return hub is None or hub.greenlet is not getcurrent()


register_backend(
    "eventlet", eventlet_wait_callback, waits=(_wait_read, _wait_write), can_wait=_can_wait
)


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
