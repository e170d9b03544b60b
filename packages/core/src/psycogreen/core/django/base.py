# SPDX-License-Identifier: BSD-3-Clause
"""``DatabaseWrapper``: Django's PostgreSQL wrapper, checking connections out of a pool.

Django's own pool support (``OPTIONS["pool"]``, Django 5.1) serves psycopg 3 only; its code
paths are reused here: ``get_new_connection()`` opens the pool and calls ``getconn()`` on
whatever the ``pool`` property returns, and ``init_connection_state()`` leaves the per-connection
set-up (time zone, role) to the pool's ``configure``. This class makes that property
psycogreen's pool, and the close a return to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import django
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as postgresql
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from psycogreen.core.pool import ConnectionPool

__all__ = ["DatabaseWrapper"]

if django.VERSION < (5, 1):
    # Before 5.1, get_new_connection() has no pool path to reuse.
    message = f"psycogreen.core.django needs Django 5.1 or newer, not {django.get_version()}"
    raise ImproperlyConfigured(message)
if is_psycopg3:
    # Django picks psycopg 3 whenever it can import it; the pool's connections are psycopg2's.
    message = (
        "psycogreen.core.django serves psycopg2 connections, but Django's PostgreSQL backend "
        "uses psycopg 3 because it is installed: uninstall psycopg (3) from this environment, "
        "or keep psycopg 3 and use Django's own pool (OPTIONS['pool'] with Django's backend)"
    )
    raise ImproperlyConfigured(message)


class DatabaseWrapper(postgresql.DatabaseWrapper):  # type: ignore[misc]  # Django is untyped
    """Django's PostgreSQL ``DatabaseWrapper`` over a :class:`~psycogreen.core.pool.ConnectionPool`.

    .. versionadded:: 1.1
    """

    #: One pool per database alias, shared by every thread and greenlet of the process.
    green_pools: ClassVar[dict[str, ConnectionPool]] = {}
    connection: Any  # Django's attribute: the psycopg2 connection, or None

    def __init__(self, settings_dict: dict[str, Any], *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 (Django's)
        """Django's, with ``OPTIONS["pool"]`` taken out of the options Django reads."""
        options = dict(settings_dict.get("OPTIONS") or {})
        pool_options = options.pop("pool", None)
        # Django's PostgreSQL backend refuses OPTIONS["pool"] without psycopg 3: it reads
        # this copy, without the key; the pool's settings are kept here.
        self.pool_options: dict[str, Any] | None = (
            {} if pool_options is True else (dict(pool_options) if pool_options else None)
        )
        super().__init__({**settings_dict, "OPTIONS": options}, *args, **kwargs)

    @property
    def pool(self) -> ConnectionPool | None:
        """The process's pool for this alias (made on first use), ``None`` without ``pool``."""
        if self.alias == NO_DB_ALIAS or self.pool_options is None:
            return None
        pool = self.green_pools.get(self.alias)
        if pool is not None:
            return pool
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            message = (
                "psycogreen.core.django pools connections: set CONN_MAX_AGE to 0, so that "
                "each connection goes back to the pool when Django closes it"
            )
            raise ImproperlyConfigured(message)
        options = {"name": f"django-{self.alias}", **self.pool_options}
        check = (
            ConnectionPool.check_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None
        )
        pool = ConnectionPool(
            kwargs=self.get_connection_params(),
            open=False,  # opened by the first get_new_connection()
            configure=self._configure_pooled,
            check=check,
            **options,
        )
        # Another thread may have made one meanwhile: the first one stays.
        return self.green_pools.setdefault(self.alias, pool)

    def _configure_pooled(self, connection: Any) -> None:  # noqa: ANN401 (psycopg2's connection)
        # Time zone and role once per server connection, outside any transaction.
        connection.autocommit = True
        self._configure_connection(connection)

    def close_pool(self) -> None:
        """Close this alias's pool (Django calls it when the time zone settings change)."""
        pool = self.green_pools.pop(self.alias, None)
        if pool is not None:
            pool.close()

    def _close(self) -> None:
        pool = self.pool
        if self.connection is None or pool is None:
            super()._close()
            return
        with self.wrap_database_errors:
            # Back to the pool, rolled back there if a transaction was left open.
            pool.putconn(self.connection)
            self.connection = None
