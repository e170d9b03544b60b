# SPDX-License-Identifier: BSD-3-Clause
"""The libpq that psycopg2 itself is linked against, reached through ctypes.

psycopg2-binary bundles its own libpq (17 at the time of writing) while a source build links
the system one, and a ``PGconn*`` must only ever be handed to the library that made it. Asking
the dynamic linker for symbols *through psycopg2's own extension module* resolves them in that
module's dependency tree (dlsym(3) on a dlopen handle), so the functions found are exactly the
ones psycopg2 calls. :func:`load` also checks this against a live connection.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["LibPQ", "load"]

_c_void_p = ctypes.c_void_p
_c_int = ctypes.c_int
_c_char_p = ctypes.c_char_p

# name: (restype, argtypes). Every pointer is declared: an undeclared restype truncates 64-bit
# pointers to int.
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "PQbackendPID": (_c_int, [_c_void_p]),
    "PQlibVersion": (_c_int, []),
    "PQgetCancel": (_c_void_p, [_c_void_p]),
    "PQfreeCancel": (None, [_c_void_p]),
}

# Non-blocking cancellation, libpq >= 17 (fe-cancel.c).
_CANCEL17: dict[str, tuple[Any, list[Any]]] = {
    "PQcancelCreate": (_c_void_p, [_c_void_p]),
    "PQcancelStart": (_c_int, [_c_void_p]),
    "PQcancelPoll": (_c_int, [_c_void_p]),
    "PQcancelSocket": (_c_int, [_c_void_p]),
    "PQcancelErrorMessage": (_c_char_p, [_c_void_p]),
    "PQcancelFinish": (None, [_c_void_p]),
}


class LibPQ:
    """The libpq functions core uses, with their C signatures declared."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        """Declare the signatures of the functions found in ``lib``."""
        self.lib = lib
        self.version: int = 0
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes
        self.version = int(lib.PQlibVersion())
        self.has_cancel17 = all(hasattr(lib, name) for name in _CANCEL17)
        if self.has_cancel17:
            for name, (restype, argtypes) in _CANCEL17.items():
                func = getattr(lib, name)
                func.restype = restype
                func.argtypes = argtypes

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (ctypes functions are untyped)
        """Return the libpq function ``name``."""
        return getattr(self.lib, name)


@functools.cache
def load() -> LibPQ | None:
    """Return psycopg2's libpq, or ``None`` where it cannot be reached (no ctypes, a static build).

    .. versionadded:: 1.0
    """
    try:
        import psycopg2._psycopg as ext  # noqa: PLC0415 (psycopg2 is optional)

        return LibPQ(ctypes.CDLL(ext.__file__))
    except (ImportError, OSError, AttributeError, TypeError):
        return None


def pgconn(conn: object, lib: LibPQ) -> int | None:
    """Return the ``PGconn*`` of a psycopg2 connection, or ``None`` once it is closed.

    The pointer is only trusted when libpq reports the same backend pid as psycopg2: another
    libpq copy, or a stale pointer, fails that check.
    """
    ptr = getattr(conn, "pgconn_ptr", None)  # psycopg2 >= 2.8; None when closed
    if not ptr:
        return None
    try:
        expected = conn.get_backend_pid()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 (any failure means the pointer cannot be trusted)
        return None
    if lib.PQbackendPID(ptr) != expected:
        return None
    return int(ptr)
