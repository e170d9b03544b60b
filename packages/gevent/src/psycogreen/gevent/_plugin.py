# SPDX-License-Identifier: BSD-3-Clause
"""gevent monkey plugin: patch psycopg2 right after ``gevent.monkey.patch_all()``.

psycogreen-gevent registers :func:`did_patch_builtins` in the entry-point group
``gevent.plugins.monkey.did_patch_builtins``; ``patch_all()`` calls every entry point of that group
once it has patched the standard library (``gevent/monkey/__init__.py``, ``gevent/events.py``).
That is the right moment in every program, including gunicorn's gevent worker, whose
``post_fork`` hook runs before the worker calls ``patch_all()``.

Setting ``PSYCOGREEN_GEVENT_AUTOPATCH=0`` turns the automatic patching off. Where gevent's
monitor thread is enabled, the plugin also watches its blocked-loop reports (``_monitor``),
patching or not: they name psycopg2 calls that block the hub, which is what an unpatched program
does. The plugin never raises: an exception from an entry point would abort ``patch_all()``
half-way, so problems become warnings.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

__all__ = ["ENV_VAR", "did_patch_builtins", "enabled"]

#: The environment variable that turns automatic patching off (``0``, ``false``, ``no``, ``off``).
ENV_VAR = "PSYCOGREEN_GEVENT_AUTOPATCH"


def enabled() -> bool:
    """Whether automatic patching is on (:data:`ENV_VAR` does not turn it off)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in {"0", "false", "no", "off"}


def did_patch_builtins(event: object) -> None:
    """Patch psycopg2 for gevent, if it is installed; ``event`` is gevent's (unused).

    A wait callback installed by other code is kept: the
    :class:`~psycogreen.core.PatchConflictError` becomes a :class:`RuntimeWarning` carrying its
    message, and ``patch_all()`` completes. Any other failure is reported the same way.
    """
    del event
    _watch_blocking()
    if not enabled():
        return
    # Imported here, not at module level: gevent loads this module while patch_all() runs.
    from psycogreen.core import (  # noqa: PLC0415
        PsycogreenError,
        warn_if_psycopg_blocks,
    )

    try:
        if importlib.util.find_spec("psycopg2") is None:  # finds without importing
            warn_if_psycopg_blocks("gevent", stacklevel=3)
            return
        from psycogreen.gevent import patch_psycopg  # noqa: PLC0415

        patch_psycopg()
    except PsycogreenError as exc:
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 (this runs inside every patch_all() of the environment)
        problem = f"{type(exc).__name__}: {exc}"
    else:
        return
    message = (
        f"psycogreen-gevent did not patch psycopg2 after gevent.monkey.patch_all(): {problem} "
        f"(set {ENV_VAR}=0 to turn automatic patching off)"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def _watch_blocking() -> None:
    """Watch gevent's blocked-loop reports for psycopg2 (a warning if that fails)."""
    try:
        from psycogreen.gevent import _monitor  # noqa: PLC0415 (gevent is patching now)

        _monitor.install()
    except Exception as exc:  # noqa: BLE001 (this runs inside every patch_all() of the environment)
        message = f"psycogreen-gevent cannot watch gevent's blocked-loop reports: {exc}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
