# SPDX-License-Identifier: BSD-3-Clause
"""Run-time checks of psycopg2: present, new enough, with the constants core relies on.

psycogreen depends on neither ``psycopg2`` nor ``psycopg2-binary`` (users choose, and the two
overwrite each other's files), so whether one is importable is only known at run time.
"""

from __future__ import annotations

import functools
from types import ModuleType

from psycogreen.core._errors import PsycopgIncompatibleError, PsycopgNotFoundError

__all__ = [
    "POLL_OK",
    "POLL_READ",
    "POLL_WRITE",
    "STATUS_SETUP",
    "attempt_error",
    "check_psycopg",
    "mark_polled",
    "was_polled",
]

# The values of psycopg2.extensions.POLL_* and STATUS_SETUP (psycopg2's ``psycopg/psycopg.h``).
# Core keeps them as plain ints so that the hot path needs no attribute lookups and importing
# core does not import psycopg2; check_psycopg() verifies them against the real module.
POLL_OK = 0
POLL_READ = 1
POLL_WRITE = 2
STATUS_SETUP = 0

_INSTALL = (
    "install one of them: pip install psycopg2-binary (or psycopg2, built against your libpq)"
)


@functools.cache
def check_psycopg() -> ModuleType:
    """Return ``psycopg2.extensions`` once psycopg2 is known to support wait callbacks.

    :raises PsycopgNotFoundError: psycopg2 cannot be imported.
    :raises PsycopgIncompatibleError: psycopg2 has no ``set_wait_callback`` (it appeared in 2.2)
        or its constants differ from the ones core relies on.

    .. versionadded:: 1.0
    """
    try:
        import psycopg2  # noqa: PLC0415 (psycopg2 is optional: imported on first use only)
        import psycopg2.extensions  # noqa: PLC0415
    except ImportError as exc:
        message = f"psycogreen needs psycopg2, which cannot be imported ({exc}); {_INSTALL}"
        raise PsycopgNotFoundError(message) from exc
    ext = psycopg2.extensions
    version = getattr(psycopg2, "__version__", "unknown")
    for name in ("set_wait_callback", "get_wait_callback"):
        if not hasattr(ext, name):
            message = (
                f"psycopg2 {version} has no psycopg2.extensions.{name}: it cannot run under a "
                f"coroutine scheduler; upgrade it: pip install -U psycopg2-binary (or psycopg2)"
            )
            raise PsycopgIncompatibleError(message)
    expected = {
        "POLL_OK": POLL_OK,
        "POLL_READ": POLL_READ,
        "POLL_WRITE": POLL_WRITE,
        "STATUS_SETUP": STATUS_SETUP,
    }
    for name, value in expected.items():
        actual = getattr(ext, name, None)
        if actual != value:
            message = (
                f"psycopg2 {version} defines extensions.{name} = {actual!r}, psycogreen expects "
                f"{value!r}: this psycopg2 is not supported; please report it"
            )
            raise PsycopgIncompatibleError(message)
    return ext


@functools.cache
def attempt_error(*, timed_out: bool) -> type[Exception]:
    """The ``psycopg2.OperationalError`` subclass core raises when it ends a connection attempt.

    ``timed_out``: the attempt's deadline passed (else: an interrupt ended it). Connecting host
    by host tells them apart from libpq's own failures by their type, never by their message.
    """
    import psycopg2  # noqa: PLC0415 (psycopg2 is optional: imported on first use only)

    name = "ConnectAttemptTimedOut" if timed_out else "ConnectAttemptInterrupted"
    doc = "A connection attempt that psycogreen ended: its deadline passed, or it was interrupted."
    namespace = {"__module__": "psycogreen.core", "__doc__": doc}
    return type(name, (psycopg2.OperationalError,), namespace)


# Set on an error a wait callback let through while it polled a connection attempt.
_POLLED = "_psycogreen_polled"


def mark_polled(exc: BaseException) -> None:
    """Record that ``exc`` ended a connection attempt while a wait callback polled it.

    libpq's message then lacks the ``connection to server at ...`` naming the server: psycopg2
    puts the connection in non-blocking mode after ``PQconnectStart()``, which clears libpq's
    message so far (libpq >= 14; measured with 17). An error raised before the first poll (a
    bad option, a socket that fails at once) is libpq's whole message.
    """
    setattr(exc, _POLLED, True)


def was_polled(exc: BaseException) -> bool:
    """Whether :func:`mark_polled` marked ``exc``."""
    return getattr(exc, _POLLED, False) is True
