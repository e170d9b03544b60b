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
import os
import sys
import threading
import time

from psycogreen.core import patch
from psycogreen.core.backend import Backend, Event, register_backend
from psycogreen.uwsgi.__about__ import __version__
from psycogreen.uwsgi._checks import AsyncAPI, UwsgiModeError, diagnose, load_uwsgi, misuse_error

__all__ = ["BACKEND", "UwsgiModeError", "__version__", "patch_psycopg", "uwsgi_wait_callback"]

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


def _sleep(seconds: float) -> None:
    # uWSGI's async API waits for fds and timers only: a timed wait on a pipe nobody writes.
    read, write = os.pipe()
    try:
        _wait_read(read, seconds)
    finally:
        os.close(read)
        os.close(write)


class _Event:
    """An event whose waiters suspend on a pipe: uWSGI's async API waits for fds and timers."""

    def __init__(self) -> None:
        self._flag = False
        self._pipe: tuple[int, int] | None = None

    def set(self) -> None:
        self._flag = True
        if self._pipe is not None:
            os.write(self._pipe[1], b"x")

    def clear(self) -> None:
        self._flag = False
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._pipe is None:
            self._pipe = os.pipe()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            _wait_read(self._pipe[0], remaining)
        return self._flag

    def __del__(self) -> None:
        self.clear()


def _event() -> Event:
    return _Event()


def _in_use() -> bool:
    uwsgi = sys.modules.get("uwsgi")
    return uwsgi is not None and diagnose(uwsgi.loop, uwsgi.opt) is None


_COPY_REFUSAL = (
    "a fast COPY never waits for its socket, so it must hand control to the worker's other "
    "requests every few milliseconds, and uWSGI's async API has no way to do that (its timers "
    "count whole seconds; a wait with no time left returns without suspending the request). "
    "Run the COPY in a gevent or eventlet worker, a mule or another process"
)

#: psycogreen's record of uWSGI's async mode (:mod:`psycogreen.core.backend`).
BACKEND = Backend(
    name="uwsgi",
    wait_read=_wait_read,
    wait_write=_wait_write,
    sleep=_sleep,
    event=_event,
    # Requests of one worker run in one thread and switch only in a wait: a lock is never
    # held across one.
    lock=threading.Lock,
    spawn=None,  # no tasks of its own: background work runs in the request that needs it
    copy_refusal=_COPY_REFUSAL,
    # The waits work only inside a request's own context.
    cancel_waits=False,
    in_use=_in_use,
)
uwsgi_wait_callback = register_backend(BACKEND)


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
