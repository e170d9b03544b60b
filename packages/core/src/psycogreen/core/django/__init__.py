# SPDX-License-Identifier: BSD-3-Clause
"""A Django database backend whose connections come from psycogreen's pool.

``ENGINE: "psycogreen.core.django"`` is Django's PostgreSQL backend (with psycopg2) in which
each request's connection is checked out of a :class:`psycogreen.core.pool.ConnectionPool`
shared by the process, and returned to it when Django closes the connection (at the end of
each request with ``CONN_MAX_AGE = 0``). The pool's settings go in ``OPTIONS["pool"]``::

    DATABASES = {
        "default": {
            "ENGINE": "psycogreen.core.django",
            "NAME": "app",
            "CONN_MAX_AGE": 0,
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10, "timeout": 10}},
        }
    }

``CONN_HEALTH_CHECKS = True`` makes the pool check each connection before handing it out.
See ``docs/pool.md``.

.. versionadded:: 1.1
"""

from __future__ import annotations
