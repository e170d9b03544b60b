# SPDX-License-Identifier: BSD-3-Clause
"""The WSGI application the uWSGI tests run (``uwsgi --wsgi-file tests/uwsgi/app.py``).

It patches psycopg2 when loaded, as an application would, and keeps the error if uWSGI's mode
is refused; it then installs the callback directly (the 1.x way), so that the refusal of the
first wait is exercised too. Every answer is JSON; an exception becomes a 500 naming it.

Endpoints: ``/mode``, ``/query?sleep=S``, ``/big?mib=N``, ``/timeout?limit=S&sleep=S``,
``/thread``, ``/pooled?sleep=S`` (a query on a connection of psycogreen's pool, at most
``POOL_MAX`` connections), ``/pool``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import psycopg2
import psycopg2.extensions

import psycogreen.core
from psycogreen.uwsgi import UwsgiModeError, patch_psycopg, uwsgi_wait_callback

DSN = os.environ["PSYCOGREEN_TEST_DSN"]
APP_NAME = os.environ.get("PSYCOGREEN_TEST_APP_NAME", "psycogreen-uwsgi-test")

STATE: dict[str, Any] = {"patch_error": None, "import_error": None, "waits": {}}

try:
    patch_psycopg()
except UwsgiModeError as exc:
    STATE["patch_error"] = str(exc)
    STATE["scheduler"] = psycogreen.core.current_scheduler()
    psycopg2.extensions.set_wait_callback(uwsgi_wait_callback)
else:
    STATE["scheduler"] = psycogreen.core.current_scheduler()
    import uwsgi

    # Count the calls into uWSGI's API (the backend looks the functions up on the module).
    def _counting(name: str) -> Callable[..., Any]:
        original = getattr(uwsgi, name)

        def wait(fd: int, timeout: int = 0, /) -> Any:
            STATE["waits"][name] = STATE["waits"].get(name, 0) + 1
            return original(fd, timeout)

        return wait

    uwsgi.wait_fd_read = _counting("wait_fd_read")
    uwsgi.wait_fd_write = _counting("wait_fd_write")

    # Outside a request: the application loads before uWSGI's loop runs.
    try:
        psycopg2.connect(DSN, application_name=APP_NAME, connect_timeout=5).close()
    except UwsgiModeError as exc:
        STATE["import_error"] = str(exc)


POOL_MAX = 5
_pool: list[Any] = []


def _the_pool() -> Any:
    # Made on the first request that needs it: only the supported mode gets that far.
    if not _pool:
        from psycogreen.core.pool import ConnectionPool

        _pool.append(
            ConnectionPool(
                DSN,
                min_size=1,
                max_size=POOL_MAX,
                timeout=10,
                kwargs={"application_name": APP_NAME + "-pool"},
            )
        )
    return _pool[0]


def pooled(q: dict[str, str]) -> dict[str, Any]:
    with _the_pool().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), pg_sleep(%s)", [float(q.get("sleep", "0"))])
        return {"backend": cur.fetchone()[0]}


def pool_stats(_q: dict[str, str]) -> dict[str, Any]:
    return dict(_the_pool().get_stats())


def connect() -> Any:
    conn = psycopg2.connect(DSN, application_name=APP_NAME, connect_timeout=5)
    conn.autocommit = True
    return conn


def mode(_q: dict[str, str]) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "patch_error": STATE["patch_error"],
        "import_error": STATE["import_error"],
        "scheduler": STATE["scheduler"],  # right after patch_psycopg()
    }


def query(q: dict[str, str]) -> dict[str, Any]:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), pg_sleep(%s)", (float(q.get("sleep", "0")),))
            backend = cur.fetchone()[0]
    finally:
        conn.close()
    return {"pid": os.getpid(), "backend": backend}


def big(q: dict[str, str]) -> dict[str, Any]:
    text = "x" * (int(q.get("mib", "32")) << 20)
    conn = connect()
    try:
        before = dict(STATE["waits"])
        with conn.cursor() as cur:
            cur.execute("SELECT length(%s)", (text,))
            length = cur.fetchone()[0]
        after = STATE["waits"]
    finally:
        conn.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("wait_fd_read", "wait_fd_write")}
    return {"length": length, "waits": delta}


def timeout(q: dict[str, str]) -> dict[str, Any]:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
            start = time.monotonic()
            try:
                with psycogreen.core.timeout(float(q.get("limit", "1"))):
                    cur.execute("SELECT pg_sleep(%s)", (float(q.get("sleep", "10")),))
            except psycopg2.Error as exc:
                error = type(exc).__name__
            else:
                error = None
            elapsed = time.monotonic() - start
            cur.execute("SELECT 1")  # the connection is still usable
            usable = cur.fetchone()[0] == 1
    finally:
        conn.close()
    return {"error": error, "elapsed": elapsed, "backend": backend, "usable": usable}


def thread(_q: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            query({})
        except Exception as exc:
            result.update(error=type(exc).__name__, message=str(exc))

    t = threading.Thread(target=run, name="not-a-request")
    t.start()
    t.join(5)
    return result


ROUTES: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
    "/mode": mode,
    "/query": query,
    "/big": big,
    "/timeout": timeout,
    "/thread": thread,
    "/pooled": pooled,
    "/pool": pool_stats,
}


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    q = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    handler = ROUTES.get(environ.get("PATH_INFO", ""))
    status = "200 OK"
    try:
        if handler is None:
            status, body = "404 Not Found", {"error": "no such route"}
        else:
            body = handler(q)
    except Exception as exc:
        status = "500 Internal Server Error"
        body = {
            "error": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
