# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-gevent: psycopg2 under gevent.

Importing this module imports gevent (and fails loudly if it is missing). The poll loop,
timeouts and cancellation live in :mod:`psycogreen.core`; this module only waits on gevent's hub.
"""

from __future__ import annotations

from gevent import get_hub
from gevent.timeout import Timeout

from psycogreen.core import make_wait_callback, patch, register_backend
from psycogreen.gevent.__about__ import __version__

__all__ = ["__version__", "gevent_wait_callback", "patch_psycopg"]

_READ = 1  # libev/libuv event masks (gevent.libev.corecext.READ / WRITE)
_WRITE = 2


def _wait(fd: int, event: int, timeout: float | None) -> bool:
    # A watcher per wait, straight on the hub: gevent.socket.wait_read() adds argument
    # handling and, when passed any timeout (even None), a Timeout object per call.
    hub = get_hub()
    watcher = hub.loop.io(fd, event)
    try:
        if timeout is None:
            hub.wait(watcher)
            return True
        # False is gevent's documented "exit the block silently" (its stubs omit it).
        with Timeout(timeout, False):  # type: ignore[arg-type]  # noqa: FBT003
            hub.wait(watcher)
            return True
        return False
    finally:
        watcher.close()


def _wait_read(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, _READ, timeout)


def _wait_write(fd: int, timeout: float | None = None, /) -> bool:
    return _wait(fd, _WRITE, timeout)


gevent_wait_callback = make_wait_callback(
    _wait_read, _wait_write, name="gevent_wait_callback", module=__name__
)
register_backend("gevent", gevent_wait_callback, waits=(_wait_read, _wait_write))


def patch_psycopg(*, force: bool = False) -> None:
    """Make psycopg2 wait through gevent's hub instead of blocking the process.

    Call it once, after ``gevent.monkey.patch_all()``. Calling it again is a no-op.

    :param force: replace a wait callback installed by other code, or for another scheduler.
    :raises psycogreen.core.PatchConflictError: such a callback is installed and ``force`` is
        false.
    :raises psycogreen.core.PsycopgNotFoundError: psycopg2 is not installed.
    """
    patch("gevent", force=force)
