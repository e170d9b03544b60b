"""gunicorn settings for the recipe: one gevent worker serving many requests at once.

This file is executed by the gunicorn master, before any monkey-patching, and ``post_fork`` runs
in the worker before the gevent worker calls ``gevent.monkey.patch_all()``. Neither is the place
to patch psycopg2, and nothing here imports psycogreen: installing psycogreen-gevent is enough,
its gevent plugin patches psycopg2 inside ``patch_all()``.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "1"))
worker_class = "gevent"
worker_connections = 1000  # greenlets per worker: concurrent requests, each may hold a connection
timeout = 30
accesslog = None


def post_worker_init(worker):
    # Runs in the worker after patch_all() and after the app is loaded: the first moment at
    # which "is psycopg2 green?" has its final answer. Log it, so that a deployment shows it.
    import psycogreen.core

    if "eventlet" in worker.cfg.worker_class_str:
        # gunicorn releases before 24 had an eventlet worker; eventlet has no plugin hook, and
        # eventlet.monkey_patch() installed its own copy of the 2010 callback: replace it.
        import psycogreen.eventlet

        psycogreen.eventlet.patch_psycopg()
    worker.log.info(
        "psycopg2 waits through: %s", psycogreen.core.current_scheduler() or "nothing (blocking)"
    )
