# SPDX-License-Identifier: BSD-3-Clause
"""A warning when psycopg 3, in the same process, will block the scheduler psycopg2 is patched for.

psycogreen cannot make psycopg 3 green: it has no wait callback. psycopg 3 waits in
``psycopg/waiting.py`` and chooses how once, when that module is first imported:
``PSYCOPG_WAIT_FUNC`` if set, else the C ``wait_c`` unless ``gevent.monkey`` reports ``select``
patched, else ``wait_poll``/``wait_selector``. Connecting waits on ``DefaultSelector``, bound by
``from selectors import DefaultSelector`` at the same moment. So psycopg 3 imported before
``gevent.monkey.patch_all()`` keeps the C wait and the unpatched selector and blocks the hub on
every query, and under eventlet (which psycopg 3 never detects) it picks ``wait_c`` whatever the
order. Nothing fails: the program is just serial. psycogreen checks when it patches and warns once.

Replacing psycopg 3's choice from here (``waiting.wait``, ``waiting.DefaultSelector``) would
reach into another library's private state, so psycogreen only says how to fix the order.
Only ``sys.modules`` is read: checking must not import psycopg.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["PsycopgBlockingWarning", "psycopg_blocking_reason", "warn_if_psycopg_blocks"]


class PsycopgBlockingWarning(RuntimeWarning):
    """psycopg 3 is imported in this process and its waits will block the scheduler.

    .. versionadded:: 1.0
    """


# The psycopg 3 wait functions that wait through the (monkey-patched) ``select`` module at call
# time, per scheduler. eventlet deletes ``select.poll``/``epoll`` when it patches ``select``, so
# only the select()-based ones work there.
_COOPERATIVE = {
    "gevent": frozenset({"wait_poll", "wait_select", "wait_selector"}),
    "eventlet": frozenset({"wait_select", "wait_selector"}),
}

_FIX = {
    "gevent": (
        "import psycopg (and anything importing it) only after gevent.monkey.patch_all(), "
        "e.g. not at the top of a gunicorn config file nor with preload_app"
    ),
    "eventlet": (
        "psycopg 3 does not detect eventlet: set the environment variable "
        "PSYCOPG_WAIT_FUNC=wait_select before the program starts, and import psycopg only "
        "after eventlet.monkey_patch()"
    ),
}

_warned: set[str] = set()


def psycopg_blocking_reason(scheduler: str) -> str | None:
    """Why psycopg 3's waits block ``scheduler`` in this process, or ``None`` if they do not.

    ``None`` also when psycopg 3 has not been imported (it will choose when it is) or when its
    wait function is one psycogreen does not know.

    .. versionadded:: 1.0
    """
    cooperative = _COOPERATIVE.get(scheduler)
    waiting = sys.modules.get("psycopg.waiting")
    if cooperative is None or waiting is None:
        return None
    wait = getattr(waiting, "wait", None)
    name = getattr(wait, "__name__", "")
    if wait is not None and wait is getattr(waiting, "wait_c", None):
        return "it waits with its C function wait_c, which blocks the whole process"
    if (
        name.startswith("wait_")
        and getattr(waiting, name, None) is wait
        and name not in cooperative
    ):
        return f"it waits with {name}, which does not work through {scheduler}'s hub"
    selectors = sys.modules.get("selectors")
    bound = getattr(waiting, "DefaultSelector", None)
    if selectors is not None and bound is not None and bound is not selectors.DefaultSelector:
        return (
            f"it connects through {bound.__module__}.{bound.__name__}, bound before "
            f"{scheduler} patched the selectors module, which blocks the whole process"
        )
    return None


def warn_if_psycopg_blocks(scheduler: str, *, stacklevel: int = 2) -> bool:
    """Warn (once per scheduler) if psycopg 3 is imported and will block ``scheduler``.

    :return: whether a warning was emitted by this call.

    .. versionadded:: 1.0
    """
    if scheduler in _warned:
        return False
    reason = psycopg_blocking_reason(scheduler)
    if reason is None:
        return False
    _warned.add(scheduler)
    version = getattr(sys.modules.get("psycopg"), "__version__", "?")
    message = (
        f"psycopg {version} (psycopg 3) is imported and will block the {scheduler} hub on every "
        f"query: {reason}. psycogreen makes psycopg2 green, not psycopg 3, which chooses its wait "
        f"function once, when psycopg.waiting is first imported. Fix: {_FIX[scheduler]}."
    )
    warnings.warn(message, PsycopgBlockingWarning, stacklevel=stacklevel + 1)
    return True
