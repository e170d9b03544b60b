# SPDX-License-Identifier: BSD-3-Clause
"""Monkey-patch a child process for one scheduler: the first thing it does, before any import.

Imports nothing at module level, so that importing it patches nothing early (gevent warns when
``threading`` was imported before ``patch_all()``).
"""

from __future__ import annotations

__all__ = ["patch_for"]


def patch_for(scheduler: str) -> None:
    """Monkey-patch this process for ``"gevent"`` or ``"eventlet"``; any other name: nothing."""
    if scheduler == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif scheduler == "eventlet":
        import warnings

        # eventlet announces its deprecation on import
        warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()
