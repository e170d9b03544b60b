"""A WSGI application whose requests wait on PostgreSQL: ``GET /?sleep=0.2``.

Each request opens a psycopg2 connection, runs ``SELECT pg_sleep(...)`` and answers with JSON
saying which scheduler psycopg2 waited through. Nothing here mentions gevent or psycogreen:
the gevent worker's ``monkey.patch_all()`` triggers psycogreen-gevent's plugin, which makes
psycopg2 wait on the hub.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

import psycopg2

DSN = os.environ.get("DATABASE_DSN", "dbname=postgres")


def application(
    environ: dict[str, object], start_response: Callable[..., object]
) -> Iterable[bytes]:
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    seconds = float(query.get("sleep", ["0.2"])[0])
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", (seconds,))
        conn.rollback()
    finally:
        conn.close()
    callback = psycopg2.extensions.get_wait_callback()
    body = json.dumps(
        {
            "slept": seconds,
            "pid": os.getpid(),
            "wait_callback": getattr(callback, "__module__", None),
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
