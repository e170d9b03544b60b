"""Views that wait on PostgreSQL through Django's ORM connection."""

from __future__ import annotations

import time

import gevent
import psycopg2.extensions
from django.conf import settings
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse


def sleep(request: HttpRequest) -> JsonResponse:
    """One query on this request's connection: ``/sleep/?s=0.2``."""
    seconds = float(request.GET.get("s", "0.2"))
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid() FROM pg_sleep(%s)", [seconds])
        pid = cur.fetchone()[0]
    # psycogreen makes psycopg2 green; Django 4.2+ uses psycopg 3 instead whenever it is
    # installed. Report which driver this connection is.
    raw = connection.connection
    driver = "psycopg2" if isinstance(raw, psycopg2.extensions.connection) else type(raw).__module__
    return JsonResponse({"backend_pid": pid, "driver": driver})


def _query_in_greenlet(seconds: float) -> int:
    # A greenlet has its own Django connection (Django keeps connections per thread, and
    # patch_all() makes threading.local per greenlet). Nothing closes it at the end of the
    # request, so close it here.
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid() FROM pg_sleep(%s)", [seconds])
            return int(cur.fetchone()[0])
    finally:
        connections.close_all()


def concurrent(request: HttpRequest) -> JsonResponse:
    """``n`` queries at once, each in a greenlet of its own: ``/concurrent/?n=5&s=0.2``."""
    n = int(request.GET.get("n", "5"))
    seconds = float(request.GET.get("s", "0.2"))
    start = time.perf_counter()
    jobs = [gevent.spawn(_query_in_greenlet, seconds) for _ in range(n)]
    gevent.joinall(jobs, raise_error=True)
    return JsonResponse(
        {
            "elapsed": time.perf_counter() - start,
            "backend_pids": [job.value for job in jobs],
        }
    )


def connections_view(request: HttpRequest) -> JsonResponse:
    """How many server connections this application holds, by state (this request's included)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
            "WHERE application_name = %s GROUP BY 1",
            [settings.APP_NAME],
        )
        return JsonResponse(dict(cur.fetchall()))
