# SPDX-License-Identifier: BSD-3-Clause
"""Waits that block the calling thread: ``poll(2)`` on one fd, with the C library's own ``poll``.

They serve the scheduler-free callback, and every backend where the scheduler cannot switch
(a thread with no hub, the hub's own greenlet). ``poll(2)`` has no 1023 fd limit, unlike
``select()`` in ``psycopg2.extras.wait_select``.
"""

from __future__ import annotations

import importlib.util
import math
import select as _patchable
from types import BuiltinFunctionType, ModuleType

__all__ = ["wait_read", "wait_write"]


def _own_select() -> ModuleType:
    """The ``select`` module with its own C functions, even in a monkey-patched program.

    Core falls back on these waits in a thread that has no hub. gevent's and eventlet's
    monkey-patching replace ``select.poll``/``select.select`` with green versions that wait on
    the calling thread's hub, creating one (and its event loop) in a thread that had none
    (gevent#1350). A module made afresh from the extension's spec has the original functions:
    ``select`` is a multi-phase extension module (PEP 489), so this is a new instance.
    """
    wait = getattr(_patchable, "poll", None) or _patchable.select
    if isinstance(wait, BuiltinFunctionType):
        return _patchable  # not patched (or imported before the patching)
    spec = importlib.util.find_spec("select")
    if spec is None or spec.loader is None:  # pragma: no cover (select is always an extension)
        return _patchable
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return fresh


select = _own_select()

if hasattr(select, "poll"):
    _READ = select.POLLIN | select.POLLERR | select.POLLHUP
    _WRITE = select.POLLOUT | select.POLLERR | select.POLLHUP

    def _wait(fd: int, events: int, timeout: float | None) -> bool:
        poller = select.poll()
        poller.register(fd, events)
        # poll() takes whole milliseconds; rounding down would wake up early and spin.
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))

    def wait_read(fd: int, timeout: float | None = None, /) -> bool:
        return _wait(fd, _READ, timeout)

    def wait_write(fd: int, timeout: float | None = None, /) -> bool:
        return _wait(fd, _WRITE, timeout)

else:  # pragma: no cover (Windows: no poll(); its select() has no fd-number limit)

    def wait_read(fd: int, timeout: float | None = None, /) -> bool:
        readable, _, failed = select.select([fd], [], [fd], timeout)
        return bool(readable or failed)

    def wait_write(fd: int, timeout: float | None = None, /) -> bool:
        _, writable, failed = select.select([], [fd], [fd], timeout)
        return bool(writable or failed)
