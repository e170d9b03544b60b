# SPDX-License-Identifier: BSD-3-Clause
"""The patch registry: which wait callback psycopg2 has, and who may replace it.

psycopg2 keeps a single, process-wide wait callback (a C static in ``green.c``). Replacing one
scheduler's callback with another's is never harmless: in psycogreen 1.0.2 patching gevent then
eventlet in a gevent program parked the first query in eventlet's hub forever. So every
``patch_psycopg()`` goes through here and a conflicting callback is refused with an error that
names both, unless it is a known equivalent for the same scheduler.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from psycogreen.core._compat import check_psycopg
from psycogreen.core._errors import PatchConflictError
from psycogreen.core._psycopg3 import warn_if_psycopg_blocks
from psycogreen.core._types import WaitCallback, WaitFunc

__all__ = [
    "can_wait",
    "current_scheduler",
    "is_patched",
    "patch",
    "register_backend",
    "unpatch",
    "waits_for",
]

_backends: dict[str, WaitCallback] = {}
# The (wait_read, wait_write) pair each backend's callback is built from: code that drives libpq
# itself (COPY) must wait through the same scheduler as the installed callback.
_waits: dict[str, tuple[WaitFunc, WaitFunc]] = {}
# Whether the calling code can wait through the scheduler (not inside the scheduler's own loop).
_can_wait: dict[str, Callable[[], bool]] = {}
_lock = threading.Lock()

# Callbacks of other projects that do what psycogreen's do, for the same scheduler: patching
# replaces them instead of refusing. eventlet.monkey_patch() installs its own copy of the 2010
# callback (eventlet/support/psycopg2_patcher.py) by default; psycogreen 1.0.2's modules.
_EQUIVALENTS: dict[tuple[str, str], str] = {
    ("eventlet.support.psycopg2_patcher", "eventlet_wait_callback"): "eventlet",
    ("psycogreen.gevent", "gevent_wait_callback"): "gevent",
    ("psycogreen.eventlet", "eventlet_wait_callback"): "eventlet",
}


def register_backend(
    scheduler: str,
    callback: WaitCallback,
    *,
    waits: tuple[WaitFunc, WaitFunc] | None = None,
    can_wait: Callable[[], bool] | None = None,
) -> None:
    """Make ``callback`` known as psycogreen's wait callback for ``scheduler``.

    Backends call this when imported, so that their callback is recognised even when a user
    installs it directly with ``set_wait_callback()`` (the 1.x way).

    :param waits: the ``(wait_read, wait_write)`` the callback is built from, for the code
        that waits on libpq itself (COPY, ``cancel()``); a backend without them cannot run COPY.
    :param can_wait: whether the calling code can wait through the scheduler right now; false
        inside the scheduler's own loop (a hub callback, a signal handler run by the hub),
        where ``cancel()`` then falls back on psycopg2's blocking one. Always true if omitted.

    .. versionadded:: 1.0
    """
    _backends[scheduler] = callback
    if waits is not None:
        _waits[scheduler] = waits
    if can_wait is not None:
        _can_wait[scheduler] = can_wait


def can_wait(scheduler: str) -> bool:
    """Whether the calling code can wait through ``scheduler``'s waits now."""
    check = _can_wait.get(scheduler)
    return check is None or check()


def waits_for(scheduler: str | None) -> tuple[WaitFunc, WaitFunc] | None:
    """The ``(wait_read, wait_write)`` registered for ``scheduler``, or ``None``.

    .. versionadded:: 1.0
    """
    return None if scheduler is None else _waits.get(scheduler)


def patch(scheduler: str, *, force: bool = False) -> None:
    """Install the registered callback of ``scheduler`` as psycopg2's wait callback.

    A no-op if it (or a ``functools.partial`` of it) is installed already.

    :param force: replace any other callback, even a foreign or conflicting one.
    :raises PatchConflictError: another scheduler's callback, or one psycogreen does not know,
        is installed and ``force`` is false.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    callback = _backends[scheduler]
    warn_if_psycopg_blocks(scheduler, stacklevel=3)  # psycopg 3 in the same process
    with _lock:
        current = ext.get_wait_callback()
        if current is None or force:
            ext.set_wait_callback(callback)
            _guard_connect(install=True)
            return
        owner, ours = _owner(current)
        if owner == scheduler:
            if not ours:  # a known equivalent: ours supersedes it
                ext.set_wait_callback(callback)
            _guard_connect(install=True)
            return
        raise PatchConflictError(_conflict_message(scheduler, current, owner, ours=ours))


def unpatch() -> bool:
    """Remove psycogreen's wait callback from psycopg2, leaving psycopg2 blocking.

    A callback installed by other code is left in place.

    :return: whether a psycogreen callback was removed.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    with _lock:
        current = ext.get_wait_callback()
        if current is None or not _owner(current)[1]:
            return False
        ext.set_wait_callback(None)
        _guard_connect(install=False)
        return True


def _guard_connect(*, install: bool) -> None:
    """Make ``psycopg2.connect`` return guarded connections while psycopg2 is patched."""
    from psycogreen.core import _connect  # noqa: PLC0415 (imports psycopg2: patch time only)

    if install:
        _connect.install()
    else:
        _connect.uninstall()


def current_scheduler() -> str | None:
    """The scheduler psycopg2 is patched for by psycogreen (``"gevent"``, ...), or ``None``.

    .. versionadded:: 1.0
    """
    current = check_psycopg().get_wait_callback()
    if current is None:
        return None
    owner, ours = _owner(current)
    return owner if ours else None


def is_patched() -> bool:
    """Whether psycopg2's wait callback is one of psycogreen's.

    .. versionadded:: 1.0
    """
    return current_scheduler() is not None


def _owner(callback: object) -> tuple[str | None, bool]:
    """The scheduler ``callback`` serves (if known) and whether it is psycogreen's own."""
    func = callback.func if isinstance(callback, functools.partial) else callback
    for scheduler, ours in _backends.items():
        if func is ours:
            return scheduler, True
    key = (str(getattr(func, "__module__", "")), str(getattr(func, "__qualname__", "")))
    return _EQUIVALENTS.get(key), False


def _describe(callback: object) -> str:
    func = callback.func if isinstance(callback, functools.partial) else callback
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{name}"


def _conflict_message(scheduler: str, current: object, owner: str | None, *, ours: bool) -> str:
    installed = _describe(current)
    if owner is not None:
        who = "psycogreen" if ours else "other code"
        return (
            f"cannot patch psycopg2 for {scheduler}: it is already patched for {owner} "
            f"({installed}, installed by {who}). One process can wait on one scheduler only; a "
            f"{scheduler} wait inside a {owner} program blocks or hangs it. Patch for the "
            f"scheduler the program runs on; to switch deliberately, call "
            f"psycogreen.core.unpatch() first or pass force=True."
        )
    return (
        f"cannot patch psycopg2 for {scheduler}: other code installed a wait callback "
        f"({installed}) and psycogreen does not replace it silently. Remove it with "
        f"psycopg2.extensions.set_wait_callback(None), or pass force=True to replace it."
    )
