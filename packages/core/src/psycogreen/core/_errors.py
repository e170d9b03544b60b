# SPDX-License-Identifier: BSD-3-Clause
"""Exceptions that say what went wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "CannotSwitchHere",
    "PatchConflictError",
    "PsycogreenError",
    "PsycopgIncompatibleError",
    "PsycopgNotFoundError",
    "SchedulerNotFoundError",
]


class PsycogreenError(Exception):
    """Base class of the errors psycogreen raises about its own setup."""


class PsycopgNotFoundError(PsycogreenError, ImportError):
    """psycopg2 cannot be imported."""


class PsycopgIncompatibleError(PsycogreenError, ImportError):
    """The installed psycopg2 lacks something psycogreen needs."""


class SchedulerNotFoundError(PsycogreenError, ImportError):
    """The psycogreen backend (or its scheduler) for a scheduler name is not installed."""


class PatchConflictError(PsycogreenError, RuntimeError):
    """psycopg2 already has a wait callback that psycogreen will not replace silently."""


class CannotSwitchHere(Exception):  # noqa: N818 (a signal between a backend and core)
    """Raised by a backend's wait, before waiting, where its scheduler cannot switch.

    In a thread without a hub, or in the hub's own greenlet (a loop callback, a finalizer the
    hub runs). Core then drives the operation itself, blocking the thread on the socket; the
    backend's ``can_switch()`` says the same to code that asks first.

    .. versionadded:: 1.1
    """
