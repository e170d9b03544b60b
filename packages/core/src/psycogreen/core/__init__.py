# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-core: run psycopg2 under coroutine schedulers behind its blocking API.

Core holds the one poll state machine psycopg2's wait callback runs, the patch registry, the
run-time checks of psycopg2, and a scheduler-free callback. A backend supplies its scheduler's
primitives in one record (:mod:`psycogreen.core.backend`). Core never imports a scheduler.

This module holds what an application uses; backend authors use :mod:`psycogreen.core.backend`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from psycogreen.core.__about__ import __version__
from psycogreen.core._blocking import wait_callback
from psycogreen.core._cancel import set_cancel_timeout
from psycogreen.core._compat import check_psycopg
from psycogreen.core._detect import SCHEDULERS, detect_scheduler, get_backend
from psycogreen.core._errors import (
    PatchConflictError,
    PsycogreenError,
    PsycopgIncompatibleError,
    PsycopgNotFoundError,
    SchedulerNotFoundError,
)
from psycogreen.core._patch import current_scheduler, is_patched, patch, unpatch
from psycogreen.core._poll import make_wait_callback as make_wait_callback
from psycogreen.core._psycopg3 import (
    PsycopgBlockingWarning,
    psycopg_blocking_reason,
    warn_if_psycopg_blocks,
)
from psycogreen.core._timeout import get_timeout, set_timeout, timeout

# For backend authors: importable here as in 1.0, documented in psycogreen.core.backend, and left
# out of __all__, which lists what an application uses.
from psycogreen.core._types import PollingConnection as PollingConnection
from psycogreen.core._types import WaitCallback as WaitCallback
from psycogreen.core._types import WaitFunc as WaitFunc
from psycogreen.core.backend import register_backend as register_backend

if TYPE_CHECKING:
    from psycogreen.core._busy import ConnectionBusyError
    from psycogreen.core._connect import connect
    from psycogreen.core._copy import (
        CopyCursorMixin,
        CopyUnavailableError,
        copy_expert,
        copy_from,
        copy_to,
    )
    from psycogreen.core._guard import (
        GuardedConnection,
        GuardedCursor,
        GuardedNamedCursor,
        guarded_connection_class,
        guarded_cursor_class,
    )

__all__ = [
    "SCHEDULERS",
    "ConnectionBusyError",
    "CopyCursorMixin",
    "CopyUnavailableError",
    "GuardedConnection",
    "GuardedCursor",
    "GuardedNamedCursor",
    "PatchConflictError",
    "PsycogreenError",
    "PsycopgBlockingWarning",
    "PsycopgIncompatibleError",
    "PsycopgNotFoundError",
    "SchedulerNotFoundError",
    "__version__",
    "check_psycopg",
    "connect",
    "copy_expert",
    "copy_from",
    "copy_to",
    "current_scheduler",
    "detect_scheduler",
    "get_backend",
    "get_timeout",
    "guarded_connection_class",
    "guarded_cursor_class",
    "is_patched",
    "patch",
    "patch_psycopg",
    "psycopg_blocking_reason",
    "set_cancel_timeout",
    "set_timeout",
    "timeout",
    "unpatch",
    "wait_callback",
    "warn_if_psycopg_blocks",
]


# Names whose modules import psycopg2 (a subclass of its connection, its exceptions) or load
# libpq: loaded on first use, so that importing core imports neither.
_LAZY = {
    "ConnectionBusyError": "psycogreen.core._busy",
    "CopyCursorMixin": "psycogreen.core._copy",
    "CopyUnavailableError": "psycogreen.core._copy",
    "copy_expert": "psycogreen.core._copy",
    "copy_from": "psycogreen.core._copy",
    "copy_to": "psycogreen.core._copy",
    "GuardedConnection": "psycogreen.core._guard",
    "GuardedCursor": "psycogreen.core._guard",
    "GuardedNamedCursor": "psycogreen.core._guard",
    "guarded_connection_class": "psycogreen.core._guard",
    "guarded_cursor_class": "psycogreen.core._guard",
    "connect": "psycogreen.core._connect",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401 (module attributes of any kind)
    module = _LAZY.get(name)
    if module is None:
        message = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(message)
    return getattr(importlib.import_module(module), name)


def patch_psycopg(scheduler: str | None = None, *, force: bool = False) -> str:
    """Make psycopg2 wait through ``scheduler`` and return the name patched for.

    :param scheduler: ``"gevent"``, ``"eventlet"``, ``"uwsgi"``, ``"blocking"`` (core's
        scheduler-free callback), or ``None`` to use the scheduler the program has
        monkey-patched (``"blocking"`` if none).
    :param force: replace a foreign or conflicting wait callback instead of refusing.
    :raises SchedulerNotFoundError: the backend for ``scheduler`` is not installed.
    :raises PatchConflictError: see :func:`patch`.

    .. versionadded:: 1.0
    """
    name = scheduler or detect_scheduler() or "blocking"
    if name == "blocking":
        patch("blocking", force=force)
    else:
        get_backend(name).patch_psycopg(force=force)
    return name
