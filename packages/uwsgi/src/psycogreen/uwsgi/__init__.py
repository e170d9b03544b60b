# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-uwsgi: psycopg2 under uWSGI's async mode (``--async N --greenlet``).

A query suspends only its own request: the wait registers the connection's socket with
``uwsgi.wait_fd_read()``/``wait_fd_write()``, switches to uWSGI's loop with ``uwsgi.suspend()``
and reads the outcome from ``uwsgi.ready_fd()``. The poll loop, timeouts and cancellation live
in :mod:`psycogreen.core`; this module only waits. It can be imported anywhere, but waits only
inside uWSGI, in the one mode measured to work: the mode is checked once, by
:func:`patch_psycopg` or else by the first wait, before any fd is registered.
"""

from __future__ import annotations

import math
import time

from psycogreen.core import make_wait_callback, patch, register_backend
from psycogreen.uwsgi.__about__ import __version__
from psycogreen.uwsgi._checks import AsyncAPI, UwsgiModeError, load_uwsgi, misuse_error

__all__ = ["UwsgiModeError", "__version__", "patch_psycopg", "uwsgi_wait_callback"]

# uWSGI parses timeouts as a C int ("i|i").
_MAX_SECONDS = 2**31 - 1


class _Unchecked:
    """Stands in for the ``uwsgi`` module until the mode has been checked.

    The first wait runs the checks and, if they pass, makes the waits call uWSGI directly.
    """

    def wait_fd_read(self, fd: int, timeout: int = 0, /) -> object:
        return _checked().wait_fd_read(fd, timeout)

    def wait_fd_write(self, fd: int, timeout: int = 0, /) -> object:
        return _checked().wait_fd_write(fd, timeout)

    def suspend(self) -> object:  # pragma: no cover (always preceded by a wait_fd_*)
        return _checked().suspend()

    def ready_fd(self) -> int:  # pragma: no cover (same)
        return _checked().ready_fd()


_api: AsyncAPI = _Unchecked()


def _checked() -> AsyncAPI:
    global _api  # noqa: PLW0603 (decided once per process: the hot path then has no checks)
    _api = load_uwsgi()
    return _api


def _wait_read(fd: int, timeout: float | None = None, /) -> bool:
    if timeout is not None:
        return _wait_timed(fd, timeout, write=False)
    try:
        _api.wait_fd_read(fd, 0)  # 0: no timer
    except (OSError, SystemError) as exc:
        raise misuse_error(exc) from exc
    # Without a timer only an event on fd schedules this request again.
    _api.suspend()
    return True


def _wait_write(fd: int, timeout: float | None = None, /) -> bool:
    if timeout is not None:
        return _wait_timed(fd, timeout, write=True)
    try:
        _api.wait_fd_write(fd, 0)
    except (OSError, SystemError) as exc:
        raise misuse_error(exc) from exc
    _api.suspend()
    return True


def _wait_timed(fd: int, timeout: float, *, write: bool) -> bool:
    # uWSGI's timers take whole seconds (a float raises TypeError), so the timeout is rounded
    # up. They count seconds of uWSGI's clock (uwsgi_now()): a timer set at 10.9 s for 1 s is
    # due at 11 s and can fire 0.1 s later when another event wakes the loop. So an early
    # expiry waits again for what is left: a wait ends up to about a second late, never early.
    # Event or expiry, uWSGI unregisters the fd and the timer (async_reset_request()).
    deadline = time.monotonic() + timeout
    remaining = timeout
    while remaining > 0:
        seconds = _MAX_SECONDS if remaining >= _MAX_SECONDS else max(1, math.ceil(remaining))
        try:
            if write:
                _api.wait_fd_write(fd, seconds)
            else:
                _api.wait_fd_read(fd, seconds)
        except (OSError, SystemError) as exc:
            raise misuse_error(exc) from exc
        _api.suspend()
        if _api.ready_fd() == fd:  # -1 when the timer expired
            return True
        remaining = deadline - time.monotonic()
    return False


uwsgi_wait_callback = make_wait_callback(
    _wait_read, _wait_write, name="uwsgi_wait_callback", module=__name__
)
register_backend("uwsgi", uwsgi_wait_callback, waits=(_wait_read, _wait_write))


def patch_psycopg(*, force: bool = False) -> None:
    """Make psycopg2 wait through uWSGI's async API instead of blocking the worker.

    Call it once, when the application loads. It checks the mode first: it works under
    ``--async N --greenlet`` only, and refuses every other mode with an error that names it
    and the fix. Calling it again is a no-op.

    :param force: replace a wait callback installed by other code, or for another scheduler.
    :raises UwsgiModeError: not running under uWSGI, or in a mode where the wait cannot work
        (sync, ``--threads``, a loop engine such as ``--gevent``, ``--async`` without a
        suspend engine, ``--ugreen``).
    :raises psycogreen.core.PatchConflictError: another callback is installed and ``force``
        is false.
    :raises psycogreen.core.PsycopgNotFoundError: psycopg2 is not installed.
    """
    _checked()
    patch("uwsgi", force=force)
