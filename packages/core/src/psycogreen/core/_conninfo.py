# SPDX-License-Identifier: BSD-3-Clause
"""The server a psycopg2 connection talks to, as events name it: backend pid, host, port."""

from __future__ import annotations

__all__ = ["Server", "server_of"]

Server = tuple[int | None, str | None, int | None]

_UNKNOWN: Server = (None, None, None)


def server_of(conn: object) -> Server:
    """``(pid, host, port)`` of ``conn``'s server, from libpq (``conn.info``, psycopg2 >= 2.8).

    Each is ``None`` where libpq does not know it yet (a pid before the connection is made), or
    for an object that is not a psycopg2 connection. Never raises.
    """
    try:
        info = conn.info  # type: ignore[attr-defined]
        pid = int(info.backend_pid) or None
        host = info.host or None
        port = int(info.port) if info.port else None
    except Exception:  # noqa: BLE001 (a closed or foreign connection: nothing to name)
        return _UNKNOWN
    return pid, host, port
