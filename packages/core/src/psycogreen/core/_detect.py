# SPDX-License-Identifier: BSD-3-Clause
"""Which scheduler the program runs on, and the psycogreen backend for a scheduler name.

Detection only looks at ``sys.modules``: importing a scheduler to find out whether it is in use
would start it (gevent creates a hub, eventlet patches on import of some modules), the mistake
psycopg 3's ``waiting.py`` avoids the same way. This module is core's one catalogue of the
schedulers that have a ``psycogreen-<name>`` distribution; what each one needs is in its
backend's record.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType

from psycogreen.core._backend import Backend
from psycogreen.core._compat import check_psycopg
from psycogreen.core._errors import SchedulerNotFoundError
from psycogreen.core._registry import owner

__all__ = [
    "SCHEDULERS",
    "detect_scheduler",
    "get_backend",
    "installed_backend",
    "scheduler_of",
]

#: The scheduler names psycogreen has a backend for, each in ``psycogreen-<name>``.
SCHEDULERS = ("gevent", "eventlet", "uwsgi")

# Callbacks of other projects for a scheduler, recognised before its backend is imported
# (eventlet.monkey_patch() installs eventlet's own copy of the 2010 callback; 1.0.2's modules).
_FOREIGN: dict[tuple[str, str], str] = {
    ("eventlet.support.psycopg2_patcher", "eventlet_wait_callback"): "eventlet",
    ("psycogreen.gevent", "gevent_wait_callback"): "gevent",
    ("psycogreen.eventlet", "eventlet_wait_callback"): "eventlet",
}


def detect_scheduler() -> str | None:
    """The scheduler the running program has monkey-patched or runs under, else ``None``.

    .. versionadded:: 1.0
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return "gevent"
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket"):
        return "eventlet"
    if "uwsgi" in sys.modules:
        # Inside uWSGI: whether it runs a mode with a suspend engine is the backend's to say
        # (its module imports no scheduler); without the backend, name it for the error.
        try:
            record = _record(get_backend("uwsgi"))
        except SchedulerNotFoundError:
            return "uwsgi"
        if record is not None and record.in_use is not None and record.in_use():
            return "uwsgi"
    return None


def get_backend(scheduler: str) -> ModuleType:
    """Import and return the psycogreen backend module for ``scheduler``.

    :raises SchedulerNotFoundError: the backend, or its scheduler, is not installed; the
        message names the distribution to install.
    :raises ValueError: psycogreen has no backend of that name.

    .. versionadded:: 1.0
    """
    if scheduler not in SCHEDULERS:
        message = f"unknown scheduler {scheduler!r}: psycogreen has backends for {SCHEDULERS}"
        raise ValueError(message)
    name = f"psycogreen.{scheduler}"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = exc.name or "?"
        what = "its backend" if missing.startswith("psycogreen") else f"{missing!r}"
        message = (
            f"psycogreen cannot run on {scheduler}: {what} is not installed ({exc}); "
            f"pip install psycogreen-{scheduler}"
        )
        raise SchedulerNotFoundError(message) from exc


def _record(module: ModuleType) -> Backend | None:
    record = getattr(module, "BACKEND", None)
    return record if isinstance(record, Backend) else None


def scheduler_of(callback: object) -> tuple[str | None, bool]:
    """The scheduler ``callback`` serves (if known) and whether it is psycogreen's own."""
    _, name, ours = owner(callback)
    if name is None:
        func = getattr(callback, "func", callback)
        key = (str(getattr(func, "__module__", "")), str(getattr(func, "__qualname__", "")))
        name = _FOREIGN.get(key)
    return name, ours


def installed_backend() -> tuple[Backend | None, str | None, object]:
    """The backend of psycopg2's installed wait callback: ``(record, scheduler, callback)``.

    A known equivalent of another project (eventlet's own callback) whose backend is not
    imported yet gets it imported: its waits are what COPY and ``cancel()`` wait through.
    ``record`` is ``None`` without a callback, or under one psycogreen does not know.
    """
    callback = check_psycopg().get_wait_callback()
    if callback is None:
        return None, None, None
    record, name, _ours = owner(callback)
    if record is not None:
        return record, name, callback
    name, _ours = scheduler_of(callback)
    if name is not None:
        with contextlib.suppress(SchedulerNotFoundError):
            record = _record(get_backend(name))
    return record, name, callback
