# SPDX-License-Identifier: BSD-3-Clause
"""Which scheduler the program runs on, and the psycogreen backend for a scheduler name.

Detection only looks at ``sys.modules``: importing a scheduler to find out whether it is in use
would start it (gevent creates a hub, eventlet patches on import of some modules), the mistake
psycopg 3's ``waiting.py`` avoids the same way.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from psycogreen.core._errors import SchedulerNotFoundError

__all__ = ["SCHEDULERS", "detect_scheduler", "get_backend"]

#: The scheduler names psycogreen has a backend for, each in ``psycogreen-<name>``.
SCHEDULERS = ("gevent", "eventlet", "uwsgi")


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
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None and getattr(uwsgi, "loop", None) is None and hasattr(uwsgi, "suspend"):
        opt = getattr(uwsgi, "opt", {})
        if any(opt.get(engine) for engine in ("greenlet", "ugreen", "stackless")):
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
