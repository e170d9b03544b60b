"""gunicorn settings for Django on the gevent worker.

Nothing here imports psycogreen, psycopg2 or Django: this file runs in the unpatched master.
The gevent worker calls ``gevent.monkey.patch_all()`` and psycogreen-gevent's plugin patches
psycopg2 there, before the worker loads ``recipe.wsgi``.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "1"))
worker_class = "gevent"
worker_connections = 100  # concurrent requests per worker; each may hold a database connection
timeout = 30
accesslog = None
