# SPDX-License-Identifier: BSD-3-Clause
"""Whether psycopg2 can wait through uWSGI's async API in this process, and why not.

Every refused mode was measured to fail, several by hanging a worker for good, so the checks
run before the first fd is registered with uWSGI. uWSGI's Python module (``uwsgi``, provided by
its Python plugin and importable only inside the server) shows the mode as
``uwsgi.loop`` (``None`` for the default loops, bytes naming a loop engine) and ``uwsgi.opt``
(the options as given: bytes, ``True`` for a bare flag, a list for a repeated option).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from psycogreen.core import PsycogreenError

__all__ = ["AsyncAPI", "UwsgiModeError", "diagnose", "load_uwsgi", "misuse_error"]

_FIX = (
    "start uWSGI with --async N --greenlet (built with the greenlet plugin, see "
    "psycogreen-uwsgi's docs)"
)

# uwsgi_opt_true() (core/uwsgi.c) turns a flag off for these values, e.g. "greenlet = false".
_OFF = frozenset({"0", "false", "off", "no"})


class UwsgiModeError(PsycogreenError, RuntimeError):
    """uWSGI runs in a mode where psycopg2 cannot wait through its async API.

    The message names the mode and the fix.

    .. versionadded:: 1.0
    """


class AsyncAPI(Protocol):
    """The part of the ``uwsgi`` module the waits use."""

    def wait_fd_read(self, fd: int, timeout: int = 0, /) -> object:
        """Register ``fd`` for reading with the current request (``timeout`` in whole seconds)."""

    def wait_fd_write(self, fd: int, timeout: int = 0, /) -> object:
        """Register ``fd`` for writing with the current request."""

    def suspend(self) -> object:
        """Switch to uWSGI's loop until an fd registered by this request is ready or times out."""

    def ready_fd(self) -> int:
        """The fd that woke the request, or -1 when its timeout expired."""


def load_uwsgi() -> AsyncAPI:
    """The ``uwsgi`` module, once the checks have passed.

    :raises UwsgiModeError: not inside uWSGI, or in a mode where the async API cannot work.
    """
    try:
        import uwsgi  # noqa: PLC0415 (exists only inside a uWSGI server)
    except ImportError as exc:
        message = (
            "psycogreen.uwsgi works only inside a uWSGI server: there is no 'uwsgi' module in "
            "this process. Run the application with uwsgi (--async N --greenlet); in any other "
            "program use the backend of the scheduler it runs on (psycogreen.core."
            "patch_psycopg() picks it), or none."
        )
        raise UwsgiModeError(message) from exc
    problem = diagnose(uwsgi.loop, uwsgi.opt)
    if problem is not None:
        raise UwsgiModeError(problem)
    return uwsgi


def diagnose(loop: object, opt: Mapping[str, object]) -> str | None:
    """What keeps the async API from working, given ``uwsgi.loop`` and ``uwsgi.opt``.

    ``None`` if it works: ``--async N --greenlet`` on uWSGI's default async loop.
    """
    engine = _text(loop)
    if engine not in {None, "async"}:
        if engine == "gevent":
            return (
                "uWSGI runs the gevent loop engine (--gevent), where uwsgi.wait_fd_read() and "
                "wait_fd_write() fail ('unable to fd N to the event queue'): there psycopg2 "
                "must wait on gevent's hub. Install psycogreen-gevent and call "
                "psycogreen.gevent.patch_psycopg() instead of psycogreen.uwsgi's."
            )
        return (
            f"uWSGI runs the {engine!r} loop engine (--{engine}), where uwsgi.wait_fd_read() "
            f"and wait_fd_write() do not work: psycogreen.uwsgi needs uWSGI's default async "
            f"loop; {_FIX}."
        )
    if _int(opt, "async") < 1:
        threads = _int(opt, "threads")
        mode = f"threaded mode (--threads {threads})" if threads > 1 else "sync mode (no --async)"
        return (
            f"uWSGI runs in {mode}: the async API needs --async (uwsgi.wait_fd_read() fails "
            f"with 'unable to fd N to the event queue'), and each request here has its own "
            f"{'thread' if threads > 1 else 'process'}, where psycopg2 may simply block. To "
            f"serve many requests per worker, {_FIX}; otherwise do not patch psycopg2."
        )
    if _flag(opt, "ugreen"):
        return (
            "uWSGI runs the ugreen suspend engine (--ugreen), which is broken in uWSGI itself "
            "on every Python and uWSGI release measured (3.10 to 3.13, 2.0.26 to 2.0.31), with "
            "or without psycopg2: with two concurrent requests the worker deadlocks (uWSGI "
            "2.0.27 and later), segfaults (2.0.26) or aborts (Python 3.13). Replace --ugreen "
            "with --greenlet (uWSGI built with the greenlet plugin, see psycogreen-uwsgi's docs)."
        )
    if not _flag(opt, "greenlet"):
        other = " (--stackless is not supported)" if _flag(opt, "stackless") else ""
        return (
            f"uWSGI runs --async without the greenlet suspend engine{other}: uwsgi.suspend() "
            f"would return at once, so a request waiting for PostgreSQL would spin and then "
            f"hang the worker for good. Add --greenlet (uWSGI built with the greenlet plugin, "
            f"see psycogreen-uwsgi's docs)."
        )
    return None


def misuse_error(exc: BaseException) -> UwsgiModeError:
    """The error for a wait uWSGI refused in a mode that passed the checks.

    psycopg2 was used outside a request's own greenlet; uWSGI raised before registering anything.
    """
    if threading.current_thread() is not threading.main_thread():
        where = (
            f"from a thread that is not serving a uWSGI request ({threading.current_thread().name})"
        )
        fix = "run the query in the request itself"
    else:
        where = "outside a uWSGI request (at import, while the app loads, in a signal handler)"
        fix = "connect and query inside the request, e.g. open connections lazily"
    return UwsgiModeError(
        f"psycopg2 was used {where}: uWSGI's async API can only suspend a request's own "
        f"greenlet ({type(exc).__name__}: {exc}). Under psycogreen.uwsgi, {fix}."
    )


def _values(opt: Mapping[str, object], name: str) -> list[object]:
    value = opt.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _text(value: object) -> str | None:
    if value is None or value is True:
        return None if value is None else "true"
    if isinstance(value, bytes):
        return value.decode(errors="replace").strip()
    return str(value).strip()


def _flag(opt: Mapping[str, object], name: str) -> bool:
    values = _values(opt, name)
    if not values:
        return False
    return (_text(values[-1]) or "").lower() not in _OFF  # the last occurrence wins


def _int(opt: Mapping[str, object], name: str) -> int:
    values = _values(opt, name)
    text = _text(values[-1]) if values else None
    try:
        return int(text or 0)
    except ValueError:
        return 0
