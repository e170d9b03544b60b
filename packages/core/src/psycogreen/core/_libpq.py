# SPDX-License-Identifier: BSD-3-Clause
"""The libpq that psycopg2 itself is linked against, reached through ctypes: core's one binding.

psycopg2-binary bundles its own libpq (17 at the time of writing) while a source build links
the system one, and a ``PGconn*`` must only ever be handed to the library that made it. Asking
the dynamic linker for symbols *through psycopg2's own extension module* resolves them in that
module's dependency tree (dlsym(3) on a dlopen handle), so the functions found are exactly the
ones psycopg2 calls. :func:`load` checks a live connection against them (:func:`pgconn`), and
:func:`load_copy` checks the library as a whole before COPY drives connections through it.

Every function core calls is declared here, once, with its C signature.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["CopyLibPQ", "CopyLibPQError", "LibPQ", "load", "load_copy", "pgconn"]

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

Signatures = dict[str, tuple[Any, list[Any]]]

# name: (restype, argtypes). Every pointer is declared: an undeclared restype truncates 64-bit
# pointers to a C int.
_SIGNATURES: Signatures = {
    "PQbackendPID": (_c_int, [_c_void_p]),
    "PQlibVersion": (_c_int, []),
    "PQgetCancel": (_c_void_p, [_c_void_p]),
    "PQfreeCancel": (None, [_c_void_p]),
    "PQconndefaults": (_c_void_p, []),
    "PQconninfoFree": (None, [_c_void_p]),
}

# Non-blocking cancellation, libpq >= 17 (fe-cancel.c).
_CANCEL17: Signatures = {
    "PQcancelCreate": (_c_void_p, [_c_void_p]),
    "PQcancelStart": (_c_int, [_c_void_p]),
    "PQcancelPoll": (_c_int, [_c_void_p]),
    "PQcancelSocket": (_c_int, [_c_void_p]),
    "PQcancelErrorMessage": (_c_char_p, [_c_void_p]),
    "PQcancelFinish": (None, [_c_void_p]),
}

# COPY's. The two called once per row in COPY TO (PQgetCopyData, PQfreemem) are also called
# with pre-converted arguments through ``fast_*`` twins without argtypes, which skips ctypes'
# per-argument conversion (see CopyLibPQ).
_COPY: Signatures = {
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
# Returned as they are (restype int), without argtypes: the ``fast_*`` twins.
_FAST = ("PQgetCopyData", "PQfreemem", "PQgetlineAsync")


class _ConninfoOption(ctypes.Structure):
    """libpq-fe.h's ``PQconninfoOption``."""

    _fields_ = (
        ("keyword", _c_char_p),
        ("envvar", _c_char_p),
        ("compiled", _c_char_p),
        ("val", _c_char_p),
        ("label", _c_char_p),
        ("dispchar", _c_char_p),
        ("dispsize", _c_int),
    )


def _declare(lib: ctypes.CDLL, signatures: Signatures) -> None:
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes


class LibPQ:
    """The libpq functions core uses outside COPY, with their C signatures declared."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        """Declare the signatures of the functions found in ``lib``."""
        self.lib = lib
        _declare(lib, _SIGNATURES)
        self.version = int(lib.PQlibVersion())
        self.has_cancel17 = all(hasattr(lib, name) for name in _CANCEL17)
        if self.has_cancel17:
            _declare(lib, _CANCEL17)

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (ctypes functions are untyped)
        """Return the libpq function ``name``."""
        return getattr(self.lib, name)

    def conndefaults(self) -> dict[str, str]:
        """Return libpq's default for each connection option it knows: ``PQconndefaults()``.

        Options without a default are left out. libpq reads them as a connect does: the
        ``PG*`` environment variables, the ``PGSERVICE`` service, its compiled-in defaults.
        """
        array = self.lib.PQconndefaults()
        if not array:
            raise MemoryError  # libpq's only failure
        try:
            found: dict[str, str] = {}
            options = ctypes.cast(array, ctypes.POINTER(_ConninfoOption))
            for option in _until_null(options):
                if option.val is not None:
                    found[option.keyword.decode()] = option.val.decode(errors="replace")
            return found
        finally:
            self.lib.PQconninfoFree(array)


def _until_null(options: Any) -> list[_ConninfoOption]:  # noqa: ANN401 (a ctypes pointer)
    out = []
    i = 0
    while options[i].keyword is not None:  # the array ends with a NULL keyword
        out.append(options[i])
        i += 1
    return out


class CopyLibPQError(Exception):
    """psycopg2's libpq cannot be driven for COPY; the message says why."""


class CopyLibPQ:
    """The libpq functions COPY uses, signatures declared, bound through :class:`ctypes.PyDLL`.

    A PyDLL keeps the GIL across the call. Every function here returns without waiting on the
    network while the connection is in non-blocking mode (libpq ``PQsetnonblocking``;
    ``PQgetResult`` is only called once ``PQisBusy`` says it will not wait), so keeping the GIL
    costs nothing, and it saves the release and re-acquisition :class:`ctypes.CDLL` does
    around every call: COPY TO makes one call per row. The functions of :class:`LibPQ` stay on
    a CDLL: ``PQconndefaults`` may ask the system's user database.
    """

    def __init__(self, lib: ctypes.PyDLL) -> None:
        """Declare the signatures of the functions of ``lib``.

        :raises CopyLibPQError: a function is missing.
        """
        self.lib = lib
        missing = [name for name in _COPY if not hasattr(lib, name)]
        if missing:
            message = f"psycopg2's libpq lacks {', '.join(missing)}"
            raise CopyLibPQError(message)
        _declare(lib, _COPY)
        for name in _COPY:
            setattr(self, name, getattr(lib, name))
        # Separate function objects (a CDLL caches one per name): called with a c_void_p, a
        # byref() and a Python int, or with a POINTER(c_char), which ctypes passes unconverted.
        # PQgetlineAsync copies one row (or the part that fits) into the caller's buffer: no
        # malloc()/PQfreemem() per row, one foreign call instead of two. Documented as
        # obsolete but exported by every libpq since 7.4; it reads the COPY data messages
        # exactly as PQgetCopyData does (fe-protocol3.c: getCopyDataMessage, which also ends
        # the COPY OUT state at CopyDone), so PQgetResult follows as usual.
        for name in _FAST:
            func = lib[name] if hasattr(lib, name) else None
            if func is not None:
                func.restype = None if name == "PQfreemem" else _c_int
            setattr(self, f"fast_{name}", func)
        self.version = int(lib.PQlibVersion())

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (ctypes functions are untyped)
        """Refuse any function ``__init__`` did not declare."""
        raise AttributeError(name)  # only declared functions: an undeclared pointer crashes


@functools.cache
def _path() -> str:
    """The file of psycopg2's extension module, through which libpq is reached.

    :raises ImportError: psycopg2 is not installed.
    """
    import psycopg2._psycopg as ext  # noqa: PLC0415 (psycopg2 is optional)

    return str(ext.__file__)


@functools.cache
def load() -> LibPQ | None:
    """Return psycopg2's libpq, or ``None`` where it cannot be reached (no ctypes, a static build).

    .. versionadded:: 1.0
    """
    try:
        return LibPQ(ctypes.CDLL(_path()))
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


def _address(func: object) -> int | None:
    if func is None:
        return None
    return ctypes.cast(func, ctypes.c_void_p).value  # type: ignore[arg-type]


@functools.cache
def _load_copy() -> CopyLibPQ | str:
    try:
        import psycopg2.extensions  # noqa: PLC0415 (psycopg2 is optional)

        path = _path()
    except ImportError as exc:
        return f"psycopg2 cannot be imported ({exc})"
    base = load()
    if base is None:
        return "psycopg2's libpq cannot be reached through ctypes (a static build?)"
    try:
        lib = CopyLibPQ(ctypes.PyDLL(path))
    except (OSError, AttributeError, TypeError, CopyLibPQError) as exc:
        return f"psycopg2's libpq cannot be used for COPY: {exc}"
    # The same library: same function addresses as the CDLL's, and the version psycopg2
    # itself reports (from its own PQlibVersion() call).
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


def load_copy() -> CopyLibPQ:
    """Return psycopg2's libpq, ready for COPY.

    :raises CopyLibPQError: it cannot be reached, lacks a function, or is not provably the one
        psycopg2 uses; the message says which.
    """
    lib = _load_copy()
    if isinstance(lib, str):
        raise CopyLibPQError(lib)
    return lib
