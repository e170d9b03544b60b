"""Celery tasks that wait on PostgreSQL, for the gevent and eventlet pools.

Run a worker with one of the green pools; Celery monkey-patches before it imports this module
(``celery worker -P gevent`` / ``-P eventlet``)::

    celery -A tasks worker -P gevent -c 100
    celery -A tasks worker -P eventlet -c 100

Under ``-P gevent`` psycogreen-gevent's plugin has patched psycopg2 already. eventlet has no such
hook, and ``eventlet.monkey_patch()`` installs eventlet's own copy of the 2010 callback, so the
``worker_init`` handler below patches explicitly; ``psycogreen.core.patch_psycopg()`` picks the
scheduler the worker runs on and is a no-op when it is already patched.
"""

from __future__ import annotations

import os
import time

import psycopg2
from celery import Celery, signals

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
DSN = os.environ.get("DATABASE_DSN", "dbname=postgres")

app = Celery("tasks", broker=BROKER, backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER))
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,  # hand each green thread one task at a time
    broker_connection_retry_on_startup=True,
)


@signals.worker_init.connect
def patch_psycopg2(**_: object) -> None:
    # Runs in the worker process after Celery has monkey-patched for the pool.
    import psycogreen.core

    psycogreen.core.patch_psycopg()


@app.task
def sleep_query(seconds: float) -> dict[str, object]:
    """Run ``pg_sleep(seconds)`` on a connection of its own; say what psycopg2 waited through."""
    started = time.time()  # wall clock: compared with the client's, on the same machine
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", (seconds,))
        conn.rollback()
    finally:
        conn.close()
    callback = psycopg2.extensions.get_wait_callback()
    return {
        "slept": seconds,
        "pid": os.getpid(),
        "wait_callback": getattr(callback, "__module__", None),
        "started": started,
        "finished": time.time(),
    }


@app.task
def django_query(seconds: float) -> dict[str, object]:
    """``pg_sleep(seconds)`` on Django's connection (the worker runs with DJANGO_SETTINGS_MODULE).

    With ``ENGINE: "psycogreen.core.django"`` the connection comes from the worker's pool, and
    Celery's Django fix-up closes it after the task, which returns it to the pool.
    """
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid() FROM pg_sleep(%s)", [seconds])
        pid = cur.fetchone()[0]
    return {"backend_pid": pid, "engine": connection.settings_dict["ENGINE"], "pid": os.getpid()}
