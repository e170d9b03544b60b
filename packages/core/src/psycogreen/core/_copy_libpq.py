# SPDX-License-Identifier: BSD-3-Clause
"""The libpq functions COPY needs, from the very libpq psycopg2 is linked against.

The symbols are looked up through psycopg2's own extension module (as in ``_libpq``), so a
psycopg2-binary process uses the libpq bundled in its wheel and a source build the system one;
:func:`load` then checks that these are the functions psycopg2 calls: the same addresses as
``_libpq``'s, and the same ``PQlibVersion()`` as ``psycopg2.extensions.libpq_version()``.

They are bound through :class:`ctypes.PyDLL`, which keeps the GIL across the call. Every
function here returns without waiting on the network while the connection is in non-blocking
mode (libpq ``PQsetnonblocking``; ``PQgetResult`` is only called once ``PQisBusy`` says it will
not wait), so keeping the GIL costs nothing, and it saves the release and re-acquisition
:class:`ctypes.CDLL` does around every call: COPY TO makes one call per row.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from psycogreen.core import _libpq

__all__ = ["CopyLibPQ", "load"]

_c_void_p = ctypes.c_void_p
_c_int = ctypes.c_int
_c_char_p = ctypes.c_char_p

# The values of libpq-fe.h's ExecStatusType.
PGRES_EMPTY_QUERY = 0
PGRES_COMMAND_OK = 1
PGRES_TUPLES_OK = 2
PGRES_COPY_OUT = 3
PGRES_COPY_IN = 4
PGRES_BAD_RESPONSE = 5
PGRES_NONFATAL_ERROR = 6
PGRES_FATAL_ERROR = 7

# The value of libpq-fe.h's CONNECTION_BAD.
CONNECTION_BAD = 1

# The PQresultErrorField() code of the SQLSTATE, from postgres_ext.h.
PG_DIAG_SQLSTATE = ord("C")

# name: (restype, argtypes). Pointers are always declared: an undeclared pointer restype is
# truncated to a C int. The two called once per row in COPY TO (PQgetCopyData, PQfreemem) are
# called with pre-converted arguments through ``fast_*`` twins without argtypes, which skips
# ctypes' per-argument conversion (see CopyLibPQ).
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "PQsendQuery": (_c_int, [_c_void_p, _c_char_p]),
    "PQflush": (_c_int, [_c_void_p]),
    "PQconsumeInput": (_c_int, [_c_void_p]),
    "PQisBusy": (_c_int, [_c_void_p]),
    "PQgetResult": (_c_void_p, [_c_void_p]),
    "PQresultStatus": (_c_int, [_c_void_p]),
    "PQresultErrorMessage": (_c_char_p, [_c_void_p]),
    "PQresultErrorField": (_c_char_p, [_c_void_p, _c_int]),
    "PQcmdTuples": (_c_char_p, [_c_void_p]),
    "PQclear": (None, [_c_void_p]),
    "PQputCopyData": (_c_int, [_c_void_p, _c_char_p, _c_int]),
    "PQputCopyEnd": (_c_int, [_c_void_p, _c_char_p]),
    "PQgetCopyData": (_c_int, [_c_void_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_char)), _c_int]),
    "PQfreemem": (None, [_c_void_p]),
    "PQerrorMessage": (_c_char_p, [_c_void_p]),
    "PQsocket": (_c_int, [_c_void_p]),
    "PQstatus": (_c_int, [_c_void_p]),
    "PQisnonblocking": (_c_int, [_c_void_p]),
    "PQsetnonblocking": (_c_int, [_c_void_p, _c_int]),
    "PQbackendPID": (_c_int, [_c_void_p]),
    "PQlibVersion": (_c_int, []),
}


class CopyLibPQError(Exception):
    """psycopg2's libpq cannot be driven for COPY; the message says why."""


class CopyLibPQ:
    """The libpq functions of psycopg2's libpq that COPY uses, signatures declared."""

    def __init__(self, lib: ctypes.PyDLL) -> None:
        """Declare the signatures of the functions of ``lib``.

        :raises CopyLibPQError: a function is missing.
        """
        self.lib = lib
        missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
        if missing:
            message = f"psycopg2's libpq lacks {', '.join(missing)}"
            raise CopyLibPQError(message)
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes
            setattr(self, name, func)
        # Separate function objects (a CDLL caches one per name): called with a c_void_p, a
        # byref() and a Python int, or with a POINTER(c_char), which ctypes passes unconverted.
        self.fast_PQgetCopyData = lib["PQgetCopyData"]
        self.fast_PQgetCopyData.restype = _c_int
        self.fast_PQfreemem = lib["PQfreemem"]
        self.fast_PQfreemem.restype = None
        # PQgetlineAsync copies one row (or the part that fits) into the caller's buffer: no
        # malloc()/PQfreemem() per row, one foreign call instead of two. Documented as
        # obsolete but exported by every libpq since 7.4; it reads the COPY data messages
        # exactly as PQgetCopyData does (fe-protocol3.c: getCopyDataMessage, which also ends
        # the COPY OUT state at CopyDone), so PQgetResult follows as usual.
        self.fast_PQgetlineAsync = lib["PQgetlineAsync"] if hasattr(lib, "PQgetlineAsync") else None
        if self.fast_PQgetlineAsync is not None:
            self.fast_PQgetlineAsync.restype = _c_int
        self.version = int(lib.PQlibVersion())

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (ctypes functions are untyped)
        """Refuse any function ``__init__`` did not declare."""
        raise AttributeError(name)  # only declared functions: an undeclared pointer crashes


def _address(func: object) -> int | None:
    if func is None:
        return None
    return ctypes.cast(func, ctypes.c_void_p).value  # type: ignore[arg-type]


@functools.cache
def _load() -> CopyLibPQ | str:
    try:
        import psycopg2._psycopg as ext  # noqa: PLC0415 (psycopg2 is optional)
        import psycopg2.extensions  # noqa: PLC0415
    except ImportError as exc:
        return f"psycopg2 cannot be imported ({exc})"
    base = _libpq.load()
    if base is None:
        return "psycopg2's libpq cannot be reached through ctypes (a static build?)"
    try:
        lib = CopyLibPQ(ctypes.PyDLL(ext.__file__))
    except (OSError, AttributeError, TypeError, CopyLibPQError) as exc:
        return f"psycopg2's libpq cannot be used for COPY: {exc}"
    # The same library: same function addresses as core's other lookup, and the version
    # psycopg2 itself reports (from its own PQlibVersion() call).
    ours = _address(lib.lib.PQbackendPID)
    if ours != _address(base.lib.PQbackendPID):
        return "two different libpq libraries answer for psycopg2's extension module"
    # The dynamic linker binds psycopg2's calls in the global scope first (the executable and
    # libraries loaded RTLD_GLOBAL), then in the extension's own dependencies, where the
    # lookup above looked. A libpq in the global scope must then be this one.
    try:
        in_global = _address(getattr(ctypes.CDLL(None), "PQbackendPID", None))
    except (OSError, TypeError):
        in_global = None
    if in_global is not None and in_global != ours:
        return (
            "another libpq is loaded in the process's global symbol scope: the functions "
            "found through psycopg2's extension module may not be the ones it calls"
        )
    linked = psycopg2.extensions.libpq_version()
    if linked != lib.version:
        return (
            f"the libpq reached through psycopg2's extension module is version {lib.version}, "
            f"psycopg2 reports {linked}"
        )
    return lib


def load() -> CopyLibPQ:
    """Return psycopg2's libpq, ready for COPY.

    :raises CopyLibPQError: it cannot be reached, lacks a function, or is not provably the one
        psycopg2 uses; the message says which.
    """
    lib = _load()
    if isinstance(lib, str):
        raise CopyLibPQError(lib)
    return lib
