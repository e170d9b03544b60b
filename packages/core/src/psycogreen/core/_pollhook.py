# SPDX-License-Identifier: BSD-3-Clause
"""Work done inside psycopg2's wait, when a connection's ``poll()`` returns ``POLL_OK``.

psycogreen's wait callback drives ``conn.poll()`` for every command psycopg2 runs in green mode
(psycopg2 ``green.c``: ``psyco_wait``), so at each ``POLL_OK`` it sees the command reach its
result, with psycopg2 still waiting for it (``_poll.py`` runs :func:`after_ok` there):

- a COPY statement sent by psycopg2's own ``execute()`` stops there in COPY state: the hook
  of :mod:`psycogreen.core._copy_execute`, set for the duration of that ``execute()`` (which
  may first send ``BEGIN``), moves the data, ends the COPY, and polls on, so that psycopg2
  itself reads the COPY's final result (its row count, or its error with the diagnostics) as
  for any statement;
- the large objects of :mod:`psycogreen.core._lobject` watch for the end of their transaction
  (psycopg2's ``conn->mark``, which Python cannot read).

The registries are keyed by ``id(conn)``; while both are empty the callback pays two truth
tests per operation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from psycogreen.core._compat import POLL_OK

__all__ = ["after_ok", "hooks", "observe", "set_hook", "settling", "watchers"]

#: ``id(conn)`` -> what to do at each ``POLL_OK`` instead of returning it: a function of the
#: connection returning the state to hand back to the wait callback.
hooks: dict[int, Callable[[object], int]] = {}
#: ``id(conn)`` -> a function called with the connection at every ``POLL_OK``.
watchers: dict[int, Callable[[object], None]] = {}
#: The ``id(conn)`` of connections whose hook already ended the operation for its deadline (a
#: COPY stopped on the server): the wait callback then waits for the server's answer, bounded
#: by the cancel timeout, instead of reporting the deadline and cancelling a second time.
settling: set[int] = set()


def set_hook(conn: object, hook: Callable[[object], int] | None) -> None:
    """Run ``hook`` at each of ``conn``'s ``POLL_OK`` (``None`` removes it)."""
    if hook is None:
        hooks.pop(id(conn), None)
        settling.discard(id(conn))
    else:
        hooks[id(conn)] = hook


def observe(conn: object, watcher: Callable[[object], None]) -> None:
    """Call ``watcher(conn)`` at each of ``conn``'s ``POLL_OK``, until ``conn`` is collected."""
    key = id(conn)
    if key not in watchers:
        # The entry must go with the connection: a later connection may get the same id.
        weakref.finalize(conn, watchers.pop, key, None)
    watchers[key] = watcher


def after_ok(conn: object) -> int:
    """The state to go on with once ``conn.poll()`` returned ``POLL_OK`` (``POLL_OK``: done)."""
    key = id(conn)
    watcher = watchers.get(key)
    if watcher is not None:
        watcher(conn)
    hook = hooks.get(key)
    if hook is None:
        return POLL_OK
    return hook(conn)
