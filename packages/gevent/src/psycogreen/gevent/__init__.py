# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-gevent: psycopg2 under gevent.

Importing this module imports gevent (and fails loudly if it is missing). The poll loop,
timeouts and cancellation live in :mod:`psycogreen.core`; this module only waits on gevent's hub.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists
from psycogreen.core import make_wait_callback, patch, register_backend
from psycogreen.core._blocking import _wait_read as _blocking_read
from psycogreen.core._blocking import _wait_write as _blocking_write
from psycogreen.gevent.__about__ import __version__

if TYPE_CHECKING:
    from gevent.hub import Hub

__all__ = ["__version__", "gevent_wait_callback", "patch_psycopg"]

_READ = 1  # libev/libuv event masks (gevent.libev.corecext.READ / WRITE)
_WRITE = 2
_IDLE = "_psycogreen_idle_io"  # the hub's cache of stopped watchers (below)


def _wait(fd: int, key: int, event: int, timeout: float | None) -> bool:
    hub = get_hub_if_exists()
    if hub is None:
        # A thread with no hub (a native thread, a thread pool's worker): nothing else can run
        # or be interrupted here, so block this thread only; creating a hub would leave a loop
        # behind per thread (the LoopExit reports: gevent#1350).
        return (_blocking_read if event == _READ else _blocking_write)(fd, timeout)
    # The hot path (bench/ section 1 measures each step). A stopped watcher per fd and event
    # is kept on the hub and re-armed by assigning its fd: that is libev's ev_io_set, which
    # tells libev the number may now name another socket (a closed fd silently leaves epoll,
    # libev "The special problem of disappearing file descriptors"), so reuse is as safe as a
    # new watcher while skipping its allocation and gevent's fd validation. The greenlet's
    # own switch is the callback (no Waiter): a stray switch into it only makes the poll
    # loop call poll() again.
    try:
        watcher = getattr(hub, _IDLE)[key]
        watcher.fd = fd  # AttributeError if active: another greenlet waits on this fd
    except (AttributeError, KeyError):
        watcher = _new_watcher(hub, fd, key, event)
    switch = getcurrent().switch
    if timeout is not None:
        return _wait_timed(hub, watcher, switch, timeout)
    watcher.start(switch)
    try:
        hub.switch()
    finally:
        watcher.stop()
    return True


def _new_watcher(hub: Hub, fd: int, key: int, event: int) -> Any:  # noqa: ANN401 (gevent's io)
    watcher = hub.loop.io(fd, event)
    idle = getattr(hub, _IDLE, None)
    if idle is None:
        # Only libev's compiled loop re-initialises a watcher on fd assignment (libuv's
        # multiplexes watchers per fd): other loops get an empty, read-only cache.
        libev = type(hub.loop).__module__ == "gevent.libev.corecext"
        idle = {} if libev else MappingProxyType({})
        setattr(hub, _IDLE, idle)
    if isinstance(idle, dict) and key not in idle:
        idle[key] = watcher
    return watcher


def _wait_timed(hub: Hub, watcher: Any, switch: Any, timeout: float) -> bool:  # noqa: ANN401
    # A timer beside the io watcher, each switching back with what happened: a third of the
    # cost of a gevent.Timeout (an exception object, thrown into the greenlet; bench/NOTES.md).
    # A stray switch returns neither value and counts as ready: the poll loop polls again.
    timer = hub.loop.timer(timeout)
    watcher.start(switch, True)  # noqa: FBT003 (the value hub.switch() returns)
    timer.start(switch, False)  # noqa: FBT003
    try:
        return hub.switch() is not False
    finally:
        watcher.stop()
        timer.close()


def _wait_read(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, fd, _READ, timeout)


def _wait_write(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, ~fd, _WRITE, timeout)


gevent_wait_callback = make_wait_callback(
    _wait_read, _wait_write, name="gevent_wait_callback", module=__name__
)


def _can_wait() -> bool:
    # The hub cannot switch to itself: code it runs directly (a loop callback, a signal
    # handler) cannot wait through it.
    hub = get_hub_if_exists()
    return hub is None or getcurrent() is not hub


register_backend(
    "gevent", gevent_wait_callback, waits=(_wait_read, _wait_write), can_wait=_can_wait
)


def patch_psycopg(*, force: bool = False) -> None:
    """Make psycopg2 wait through gevent's hub instead of blocking the process.

    Call it once, after ``gevent.monkey.patch_all()``. Calling it again is a no-op.

    :param force: replace a wait callback installed by other code, or for another scheduler.
    :raises psycogreen.core.PatchConflictError: such a callback is installed and ``force`` is
        false.
    :raises psycogreen.core.PsycopgNotFoundError: psycopg2 is not installed.
    """
    patch("gevent", force=force)
