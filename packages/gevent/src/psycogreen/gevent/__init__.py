# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-gevent: psycopg2 under gevent.

Importing this module imports gevent (and fails loudly if it is missing). The poll loop,
timeouts and cancellation live in :mod:`psycogreen.core`; this module only waits on gevent's hub.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import gevent
import gevent.event
import gevent.lock
from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists
from psycogreen.core import patch
from psycogreen.core.backend import Backend, CannotSwitchHere, Event, register_backend
from psycogreen.gevent import _monitor
from psycogreen.gevent.__about__ import __version__

if TYPE_CHECKING:
    from gevent.hub import Hub

__all__ = [
    "BACKEND",
    "__version__",
    "gevent_wait_callback",
    "patch_psycopg",
    "watch_blocking",
]

_READ = 1  # libev/libuv event masks (gevent.libev.corecext.READ / WRITE)
_WRITE = 2
_IDLE = "_psycogreen_idle_io"  # the hub's cache of stopped watchers (below)


def _wait(fd: int, key: int, event: int, timeout: float | None) -> bool:
    hub = get_hub_if_exists()
    current = getcurrent()
    if hub is None or current is hub:
        # No hub in this thread (core blocks the thread only; creating a hub would leave a
        # loop behind per thread, gevent#1350), or the hub itself (a loop callback, a
        # finalizer it runs), which cannot switch to itself.
        raise CannotSwitchHere
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
    switch = current.switch
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


def _has_hub() -> bool:
    # A thread with no hub (a native thread, a thread pool's worker): core blocks that thread
    # only; creating a hub would leave a loop behind per thread (gevent#1350).
    return get_hub_if_exists() is not None


def _can_switch() -> bool:
    # The hub cannot switch to itself: code it runs directly (a loop callback, a signal
    # handler, a finalizer run by the collector in the hub) cannot wait through it.
    hub = get_hub_if_exists()
    return hub is not None and getcurrent() is not hub


def _spawn(func: Callable[[], object]) -> gevent.Greenlet[[], object]:
    return gevent.spawn(func)


def _event() -> Event:
    # gevent's stubs overload wait() (None -> Literal[True]); the protocol's shape is the same.
    return cast("Event", gevent.event.Event())


#: psycogreen's record of gevent (:mod:`psycogreen.core.backend`).
BACKEND = Backend(
    name="gevent",
    wait_read=_wait_read,
    wait_write=_wait_write,
    can_switch=_can_switch,
    has_hub=_has_hub,
    sleep=gevent.sleep,
    event=_event,
    lock=gevent.lock.RLock,
    spawn=_spawn,
    interrupt_reasons=((gevent.Timeout, "timeout"), (gevent.GreenletExit, "kill")),
    # psycogreen 1.0.2's module had the same name as this one.
    equivalents=frozenset({("psycogreen.gevent", "gevent_wait_callback")}),
)
gevent_wait_callback = register_backend(BACKEND)


def patch_psycopg(*, force: bool = False) -> None:
    """Make psycopg2 wait through gevent's hub instead of blocking the process.

    Call it once, after ``gevent.monkey.patch_all()``. Calling it again is a no-op.

    :param force: replace a wait callback installed by other code, or for another scheduler.
    :raises psycogreen.core.PatchConflictError: such a callback is installed and ``force`` is
        false.
    :raises psycogreen.core.PsycopgNotFoundError: psycopg2 is not installed.

    Where gevent's monitor thread is enabled, its blocked-loop reports are watched as well
    (:func:`watch_blocking`).
    """
    patch("gevent", force=force)
    _monitor.install()


def watch_blocking() -> bool:
    """Warn when gevent's monitor finds the hub blocked by psycopg2 or psycopg.

    gevent's monitor thread (``GEVENT_MONITOR_THREAD_ENABLE=1``) reports a hub that has not
    switched for ``max_blocking_time`` seconds; psycogreen then reads the blocked stack, and
    when psycopg2 (or psycopg 3) is what blocks, logs a warning on the ``psycogreen`` logger
    naming the cause and the fix, and emits a :class:`psycogreen.core.events.LoopBlocked`.
    ``patch_psycopg()`` and the monkey plugin call this; call it yourself after enabling the
    monitor in code (``gevent.config.monitor_thread = True``).

    :return: whether the monitor thread is enabled (else there is nothing to watch).

    .. versionadded:: 1.1
    """
    return _monitor.install()
