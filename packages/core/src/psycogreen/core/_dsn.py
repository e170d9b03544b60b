# SPDX-License-Identifier: BSD-3-Clause
"""``conn.dsn`` as psycopg2 reports it for the connection string a program passed.

psycopg2 keeps the string it connected with, the password replaced by ``xxx``
(``connection_int.c``: ``conn_obscure_password``): parsed by libpq, ``password`` set to ``xxx``,
and put back together by ``psycopg2.extensions.make_dsn`` (the options then in libpq's order);
a string without a password is kept as it is.
"""

from __future__ import annotations

__all__ = ["KEY", "obscured", "remember"]

#: Where a connection made by psycogreen keeps its reported ``dsn`` (its ``__dict__``).
KEY = "_psycogreen_dsn"


def obscured(dsn: str) -> str:
    """``dsn`` with its password hidden, exactly as psycopg2 reports ``conn.dsn``."""
    import psycopg2.extensions  # noqa: PLC0415 (psycopg2 is optional)

    params = psycopg2.extensions.parse_dsn(dsn)
    if "password" not in params:
        return dsn
    params["password"] = "xxx"  # noqa: S105 (psycopg2's placeholder, not a password)
    return str(psycopg2.extensions.make_dsn(None, **params))


def remember(conn: object, dsn: str) -> None:
    """Record on ``conn`` the ``dsn`` psycopg2 would report for the string ``dsn``."""
    namespace = getattr(conn, "__dict__", None)  # psycopg2's own class has none: nothing to do
    if namespace is not None:
        namespace[KEY] = obscured(dsn)
