# SPDX-License-Identifier: BSD-3-Clause
"""Recipe 3: Django under gunicorn's gevent worker (examples/django_gevent).

Where to patch (nowhere: the plugin does it in the worker), a view that queries concurrently,
and what ``CONN_MAX_AGE`` does to the number of server connections when every request is a
greenlet.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.recipes.conftest import EXAMPLES, StartServer, free_port, wait_for_port
from tests.recipes.test_gunicorn import burst, get
from tests.support.env import require

APP = EXAMPLES / "django_gevent"


def start_django(
    start_server: StartServer, env: dict[str, str], conn_max_age: int, pool: int = 0
) -> int:
    require("django")
    require("gevent")
    gunicorn = require("gunicorn.config")
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    if any(getattr(s, "name", None) == "control_socket_disable" for s in gunicorn.KNOWN_SETTINGS):
        args.append("--no-control-socket")
    env = {
        **env,
        "CONN_MAX_AGE": str(conn_max_age),
        "RECIPE_POOL": str(pool),
        "RECIPE_APP_NAME": f"psycogreen-recipe-django-{os.getpid()}-{port}",
    }
    server = start_server([*args, "recipe.wsgi"], cwd=APP, env=env, name=f"django-{port}")
    wait_for_port(port, server.proc, server.log)
    status, _ = get(port, "/sleep/?s=0")  # the worker has loaded Django
    assert status == 200
    return port


def test_views_overlap_and_connections_close(
    start_server: StartServer, recipe_env: dict[str, str]
) -> None:
    port = start_django(start_server, recipe_env, conn_max_age=0)
    elapsed, results = burst(port, "/sleep/?s=0.2", 20)
    assert [status for status, _ in results] == [200] * 20
    assert len({body["backend_pid"] for _, body in results}) == 20  # a connection per request
    assert {body["driver"] for _, body in results} == {"psycopg2"}
    print(f"\ndjango: 20 requests x pg_sleep(0.2) in {elapsed:.2f} s")
    assert elapsed < 0.6, elapsed  # serial would be 4 s

    status, body = get(port, "/concurrent/?n=5&s=0.2")
    assert status == 200
    assert len(set(body["backend_pids"])) == 5  # each greenlet had its own connection
    print(f"django: one view, 5 greenlets x pg_sleep(0.2) in {body['elapsed']:.2f} s")
    assert body["elapsed"] < 0.6, body

    # CONN_MAX_AGE = 0: every connection was closed when its request (or greenlet) ended; only
    # the one answering this request is left.
    status, body = get(port, "/connections/")
    assert body == {"active": 1}


@pytest.mark.slow
def test_conn_max_age_keeps_a_connection_per_finished_greenlet(
    start_server: StartServer, recipe_env: dict[str, str]
) -> None:
    # Persistent connections are kept per thread; under gevent a thread is a request's
    # greenlet, which never comes back, so connections pile up instead of being reused.
    port = start_django(start_server, recipe_env, conn_max_age=60)
    _, first = get(port, "/connections/")
    _, one = burst(port, "/sleep/?s=0.05", 20)
    _, after_one = get(port, "/connections/")
    _, two = burst(port, "/sleep/?s=0.05", 20)
    _, after_two = get(port, "/connections/")
    print(f"\ndjango CONN_MAX_AGE=60: {first} -> {after_one} -> {after_two}")
    # Connections outlive their requests ...
    assert after_one.get("idle", 0) >= first.get("idle", 0) + 10
    assert after_two.get("idle", 0) >= after_one.get("idle", 0) + 10
    # ... and are never reused: the second burst ran on 20 new server connections.
    pids_one = {body["backend_pid"] for _, body in one}
    pids_two = {body["backend_pid"] for _, body in two}
    assert len(pids_one) == len(pids_two) == 20
    assert not pids_one & pids_two


def test_manage_py_patches_for_commands(recipe_env: dict[str, str]) -> None:
    # A management command runs in a process manage.py monkey-patched first: psycopg2 is green
    # there too (psycogreen-gevent's plugin), and Django's connection works.
    require("django")
    require("gevent")
    code = (
        "import psycogreen.core; from django.db import connection; cur = connection.cursor(); "
        "cur.execute('SELECT 1'); print(psycogreen.core.current_scheduler(), cur.fetchone()[0])"
    )
    proc = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=APP,
        env=recipe_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "gevent 1"


def test_pooled_backend_shares_max_size_connections(
    start_server: StartServer, recipe_env: dict[str, str]
) -> None:
    """ENGINE psycogreen.core.django: 20 concurrent requests over a pool of 5."""
    port = start_django(start_server, recipe_env, conn_max_age=0, pool=5)
    elapsed, results = burst(port, "/sleep/?s=0.2", 20)
    assert [status for status, _ in results] == [200] * 20
    assert {body["driver"] for _, body in results} == {"psycopg2"}
    pids = {body["backend_pid"] for _, body in results}
    print(f"\ndjango pooled: 20 requests x pg_sleep(0.2) over 5 connections in {elapsed:.2f} s")
    assert len(pids) <= 5, pids
    assert elapsed >= 0.8 - 0.05, elapsed  # 4 rounds of 5: the pool's maximum holds
    assert elapsed < 2.0, elapsed
    # Back in the pool, not closed: the next burst reuses the same server connections.
    _, again = burst(port, "/sleep/?s=0.01", 10)
    assert {body["backend_pid"] for _, body in again} <= pids
    status, body = get(port, "/connections/")
    assert status == 200
    assert sum(body.values()) <= 5, body  # this request's connection is one of the pool's
    assert body.get("active") == 1, body
