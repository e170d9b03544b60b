# SPDX-License-Identifier: BSD-3-Clause
"""COPY's errors: why COPY cannot run cooperatively, and psycopg2's class for a SQLSTATE.

Loaded with COPY only (``psycogreen.core.__getattr__``): psycopg2 is imported here.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions

from psycogreen.core._errors import PsycogreenError

__all__ = ["CopyUnavailableError", "class_fallback"]


class CopyUnavailableError(PsycogreenError, RuntimeError):
    """COPY cannot run without blocking the scheduler here; the message says why.

    .. versionadded:: 1.0
    """


def class_fallback(sqlstate: str) -> type[psycopg2.Error]:
    """psycopg2's exception for an unknown SQLSTATE, by its class (``pqpath.c``)."""
    by_class = {
        "0A": psycopg2.NotSupportedError,
        "21": psycopg2.IntegrityError,
        "22": psycopg2.DataError,
        "23": psycopg2.IntegrityError,
        "24": psycopg2.InternalError,
        "25": psycopg2.InternalError,
        "26": psycopg2.InternalError,
        "27": psycopg2.InternalError,
        "28": psycopg2.OperationalError,
        "2B": psycopg2.InternalError,
        "2D": psycopg2.InternalError,
        "2F": psycopg2.InternalError,
        "34": psycopg2.ProgrammingError,
        "3D": psycopg2.ProgrammingError,
        "3F": psycopg2.ProgrammingError,
        "40": psycopg2.extensions.TransactionRollbackError,
        "42": psycopg2.ProgrammingError,
        "44": psycopg2.ProgrammingError,
        "53": psycopg2.OperationalError,
        "54": psycopg2.OperationalError,
        "55": psycopg2.OperationalError,
        "57": psycopg2.OperationalError,
        "58": psycopg2.OperationalError,
        "F0": psycopg2.InternalError,
        "HV": psycopg2.OperationalError,
        "P0": psycopg2.InternalError,
        "XX": psycopg2.InternalError,
    }
    return by_class.get(sqlstate[:2], psycopg2.DatabaseError)
