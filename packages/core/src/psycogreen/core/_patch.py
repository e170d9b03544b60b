# SPDX-License-Identifier: BSD-3-Clause
"""Patching psycopg2: install a backend's wait callback, and guard ``psycopg2.connect``.

psycopg2 keeps a single, process-wide wait callback (a C static in ``green.c``). Replacing one
scheduler's callback with another's is never harmless: in psycogreen 1.0.2 patching gevent then
eventlet in a gevent program parked the first query in eventlet's hub forever. So every
``patch_psycopg()`` goes through here and a conflicting callback is refused with an error that
names both, unless it is a known equivalent for the same scheduler.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from types import ModuleType

from psycogreen.core import _emit, _poll
from psycogreen.core._compat import check_psycopg
from psycogreen.core._detect import scheduler_of
from psycogreen.core._errors import PatchConflictError
from psycogreen.core._psycopg3 import warn_if_psycopg_blocks
from psycogreen.core._registry import callback_of, owner, twin
from psycogreen.core._types import WaitCallback

__all__ = ["current_scheduler", "is_patched", "patch", "retime", "unpatch"]

_lock = threading.Lock()
_log = logging.getLogger("psycogreen")


def _connect() -> ModuleType:
    """Core's ``connect`` module, loaded at patch time: it imports psycopg2, which is optional."""
    from psycogreen.core import _connect  # noqa: PLC0415 (psycopg2 is optional: patch time only)

    return _connect


def patch(scheduler: str, *, force: bool = False) -> None:
    """Install the registered callback of ``scheduler`` as psycopg2's wait callback.

    A no-op if it (or a ``functools.partial`` of it) is installed already.

    :param force: replace any other callback, even a foreign or conflicting one.
    :raises PatchConflictError: another scheduler's callback, or one psycogreen does not know,
        is installed and ``force`` is false.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    callback = callback_of(scheduler)
    warn_if_psycopg_blocks(scheduler, stacklevel=3)  # psycopg 3 in the same process
    with _lock:
        current = ext.get_wait_callback()
        if current is None or force:
            ext.set_wait_callback(callback)
            _connect().install()
            return
        name, ours = scheduler_of(current)
        if name == scheduler:
            if not ours:  # a known equivalent: ours supersedes it
                ext.set_wait_callback(callback)
            _connect().install()
            return
        raise PatchConflictError(_conflict_message(scheduler, current, name, ours=ours))


def unpatch() -> bool:
    """Remove psycogreen's wait callback from psycopg2, leaving psycopg2 blocking.

    A callback installed by other code is left in place.

    :return: whether a psycogreen callback was removed.

    .. versionadded:: 1.0
    """
    ext = check_psycopg()
    with _lock:
        current = ext.get_wait_callback()
        if current is None or not owner(current)[2]:
            return False
        ext.set_wait_callback(None)
        _connect().uninstall()
        _poll.recheck()
        return True


def retime() -> None:
    """Install the variant of psycogreen's installed callback that per-wait timing asks for.

    The twin that times its waits while someone subscribes to per-wait timing, the normal one
    otherwise; a ``functools.partial`` keeps its arguments. Nothing changes under a callback
    that is not psycogreen's, or before psycopg2 is imported (:func:`patch` then chooses).
    """
    ext = sys.modules.get("psycopg2.extensions")
    if ext is None:
        return
    with _lock:
        current = ext.get_wait_callback()
        partial = current if isinstance(current, functools.partial) else None
        func = partial.func if partial is not None else current
        if func is None:
            return
        wanted = twin(func, timed=bool(_emit.wait_subscribers))
        if wanted is None or wanted is func:
            return
        if partial is not None:
            wanted = functools.partial(wanted, *partial.args, **partial.keywords)
        ext.set_wait_callback(wanted)


def current_scheduler() -> str | None:
    """The scheduler psycopg2 is patched for by psycogreen (``"gevent"``, ...), or ``None``.

    .. versionadded:: 1.0
    """
    current = check_psycopg().get_wait_callback()
    if current is None:
        return None
    _record, name, ours = owner(current)
    return name if ours else None


def is_patched() -> bool:
    """Whether psycopg2's wait callback is one of psycogreen's.

    .. versionadded:: 1.0
    """
    return current_scheduler() is not None


def _installed_the_1x_way(callback: WaitCallback) -> None:
    """A psycogreen callback runs, but ``psycopg2.connect`` was never guarded: say so, once.

    ``set_wait_callback(gevent_wait_callback)`` (the 1.x way) installs the callback only. From
    here on ``psycopg2.connect`` returns guarded connections with green COPY; the connections
    made before (this one included) have neither, and the log says the one line that fixes it.
    """
    current = check_psycopg().get_wait_callback()
    func = current.func if isinstance(current, functools.partial) else current
    if func is not callback or not owner(callback)[2] or _connect().installed():
        return
    with _lock:
        _connect().install()
    _log.warning(
        "psycogreen's wait callback was installed with psycopg2.extensions.set_wait_callback() "
        "(the 1.x way), which leaves psycopg2.connect alone: the connections opened so far are "
        "not guarded against use by two greenlets (which freezes the process) and refuse COPY. "
        "psycopg2.connect is guarded from now on; to cover every connection, call "
        "patch_psycopg() of the backend (psycogreen.%s.patch_psycopg()) at start-up instead.",
        owner(callback)[1],
    )


_poll.on_first_use(_installed_the_1x_way)


def _describe(callback: object) -> str:
    func = callback.func if isinstance(callback, functools.partial) else callback
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{name}"


def _conflict_message(scheduler: str, current: object, owner_: str | None, *, ours: bool) -> str:
    installed = _describe(current)
    if owner_ is not None:
        who = "psycogreen" if ours else "other code"
        return (
            f"cannot patch psycopg2 for {scheduler}: it is already patched for {owner_} "
            f"({installed}, installed by {who}). One process can wait on one scheduler only; a "
            f"{scheduler} wait inside a {owner_} program blocks or hangs it. Patch for the "
            f"scheduler the program runs on; to switch deliberately, call "
            f"psycogreen.core.unpatch() first or pass force=True."
        )
    return (
        f"cannot patch psycopg2 for {scheduler}: other code installed a wait callback "
        f"({installed}) and psycogreen does not replace it silently. Remove it with "
        f"psycopg2.extensions.set_wait_callback(None), or pass force=True to replace it."
    )
