# SPDX-License-Identifier: BSD-3-Clause
"""The backends core knows, each with the wait callback built from it, and whose callback is whose.

psycopg2 keeps a single, process-wide wait callback (a C static in ``green.c``). Code that waits
on libpq itself (COPY, ``cancel()``) and code above core (the pool) must wait through the same
scheduler as that callback: they ask here which backend the installed callback belongs to.
"""

from __future__ import annotations

import functools

from psycogreen.core import _emit
from psycogreen.core._backend import Backend
from psycogreen.core._compat import check_psycopg
from psycogreen.core._poll import build_callback, build_timed_callback
from psycogreen.core._types import WaitCallback

__all__ = [
    "active_backend",
    "backends",
    "callback_of",
    "owner",
    "register_backend",
    "twin",
]

# name -> (record, its callback). Written when a backend module is imported.
_backends: dict[str, tuple[Backend, WaitCallback]] = {}
# Each callback -> its twin: the normal one -> the one that times its waits, and back.
_twins: dict[WaitCallback, WaitCallback] = {}
# The callbacks that time their waits.
_timed: set[WaitCallback] = set()


def register_backend(backend: Backend) -> WaitCallback:
    """Make ``backend`` known to core and return its wait callback.

    A backend module calls this once, when imported, and exports the callback under its 1.x
    name (``gevent_wait_callback``, ...), so that it is recognised even when a user installs
    it directly with ``set_wait_callback()``. Registering the same name again replaces the
    record (a reloaded module).

    .. versionadded:: 1.1
    """
    callback = build_callback(backend)
    timed = build_timed_callback(backend)
    previous = _backends.get(backend.name)
    if previous is not None:  # a reloaded backend module: forget the old pair
        old = _twins.pop(previous[1], None)
        if old is not None:
            _twins.pop(old, None)
            _timed.discard(old)
    _backends[backend.name] = (backend, callback)
    _twins[callback] = timed
    _twins[timed] = callback
    _timed.add(timed)
    _emit.add_reasons(backend.interrupt_reasons)
    return callback


def backends() -> tuple[Backend, ...]:
    """Every registered backend, in the order of registration."""
    return tuple(record for record, _ in _backends.values())


def callback_of(name: str) -> WaitCallback:
    """The wait callback of the backend registered as ``name``, to install now.

    Its twin that times every wait while someone subscribes to per-wait timing.

    :raises KeyError: no backend of that name is registered.
    """
    callback = _backends[name][1]
    return _twins[callback] if _emit.wait_subscribers else callback


def twin(callback: WaitCallback, *, timed: bool) -> WaitCallback | None:
    """The variant of the psycogreen ``callback`` that times its waits (or not).

    ``callback`` itself if it is that variant already; ``None`` for a callback not psycogreen's.
    """
    if callback in _timed:
        return callback if timed else _twins[callback]
    if callback in _twins:
        return _twins[callback] if timed else callback
    return None


def owner(callback: object) -> tuple[Backend | None, str | None, bool]:
    """Whose ``callback`` is: ``(backend, scheduler name, psycogreen's own?)``.

    A known equivalent of another project (eventlet's own callback, psycogreen 1.0.2's) that
    a registered backend declares names that backend. ``(None, None, False)`` for a callback
    no registered backend declared.
    """
    func = callback.func if isinstance(callback, functools.partial) else callback
    for record, ours in _backends.values():
        if func is ours or func is _twins[ours]:
            return record, record.name, True
    key = (str(getattr(func, "__module__", "")), str(getattr(func, "__qualname__", "")))
    for record, _ in _backends.values():
        if key in record.equivalents:
            return record, record.name, False
    return None, None, False


def active_backend() -> Backend | None:
    """The registered backend of psycopg2's installed wait callback, if any.

    Code that must wait the way psycopg2's own operations do (COPY, ``cancel()``, the pool)
    waits through this record's primitives. ``None`` without a callback, or under a callback
    no registered backend declared (see :func:`psycogreen.core._detect.installed_backend`,
    which also imports the backend of a known equivalent).
    """
    current = check_psycopg().get_wait_callback()
    if current is None:
        return None
    return owner(current)[0]
