# SPDX-License-Identifier: BSD-3-Clause
"""Work done inside psycopg2's wait, when a guarded connection's ``poll()`` returns ``POLL_OK``.

Every wait callback drives ``conn.poll()`` on the connection object psycopg2 hands it
(psycopg2 ``green.c``: ``psyco_wait``; the callback contract), so a guarded connection's
``poll()`` (``_guard.py``) sees each command psycopg2 runs in green mode reach its result, with
psycopg2 still waiting for it:

- a COPY statement sent by psycopg2's own ``execute()`` stops there in COPY state: the hook
  of :mod:`psycogreen.core._copy_execute`, set for the duration of that ``execute()`` (which
  may first send ``BEGIN``), moves the data, ends the COPY, and polls on, so that psycopg2
  itself reads the COPY's final result (its row count, or its error with the diagnostics) as
  for any statement;
- the large objects of :mod:`psycogreen.core._lobject` watch for the end of their transaction
  (psycopg2's ``conn->mark``, which Python cannot read).

The registries are keyed by ``id(conn)``; an empty registry costs one truth test per poll.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from psycogreen.core._compat import POLL_OK

__all__ = ["after_ok", "hooks", "observe", "running_hooks", "set_hook", "watchers"]

#: ``id(conn)`` -> what to do at each ``POLL_OK`` instead of returning it: a function of the
#: connection returning the state to hand back to the wait callback.
hooks: dict[int, Callable[[Any], int]] = {}
#: ``id(conn)`` -> a function called with the connection at every ``POLL_OK``.
watchers: dict[int, Callable[[Any], None]] = {}
#: The connection classes whose ``poll()`` runs the hooks: the guarded connection, which sets
#: it when imported (it sits above this module).
running_hooks: tuple[type, ...] = ()


def set_hook(conn: object, hook: Callable[[Any], int] | None) -> None:
    """Run ``hook`` at each of ``conn``'s ``POLL_OK`` (``None`` removes it)."""
    if hook is None:
        hooks.pop(id(conn), None)
    else:
        hooks[id(conn)] = hook


def observe(conn: object, watcher: Callable[[Any], None]) -> None:
    """Call ``watcher(conn)`` at each of ``conn``'s ``POLL_OK``, until ``conn`` is collected."""
    key = id(conn)
    if key not in watchers:
        # The entry must go with the connection: a later connection may get the same id.
        weakref.finalize(conn, watchers.pop, key, None)
    watchers[key] = watcher


def after_ok(conn: object) -> int:
    """What a guarded ``poll()`` returns once psycopg2's own returned ``POLL_OK``."""
    key = id(conn)
    watcher = watchers.get(key)
    if watcher is not None:
        watcher(conn)
    hook = hooks.get(key)
    if hook is None:
        return POLL_OK
    return hook(conn)
