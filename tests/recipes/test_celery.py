# SPDX-License-Identifier: BSD-3-Clause
"""Recipe 2: Celery with the gevent and eventlet pools (examples/celery_worker).

A real Redis broker (the Debian package) started by the test, a real worker with concurrency 100,
and an unpatched client sending 100 tasks that each run ``pg_sleep(0.2)``.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.recipes.conftest import EXAMPLES, StartServer, run_recipe
from tests.support.env import require

APP = EXAMPLES / "celery_worker"
TASKS = 100
SLEEP = 0.2


@pytest.mark.parametrize(("pool", "db"), [("gevent", 1), ("eventlet", 2)])
def test_pool_runs_100_queries_at_once(
    pool: str, db: int, start_server: StartServer, recipe_env: dict[str, str], redis_url: str
) -> None:
    require("celery")
    require(pool)
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    env = {**recipe_env, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
    worker = start_server(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-P",
            pool,
            "-c",
            str(TASKS),
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
            "-n",
            f"recipe-{pool}@localhost",
        ],
        cwd=APP,
        env=env,
        name=f"celery-{pool}",
    )
    out = run_recipe(APP / "run_burst.py", str(TASKS), str(SLEEP), env=env)
    baseline, measured = out["baseline"], out["measured"]
    results = measured["results"]
    assert len(results) == TASKS
    assert {r["wait_callback"] for r in results} == {f"psycogreen.{pool}"}, worker.log.read_text()[
        -3000:
    ]
    assert len({r["pid"] for r in results}) == 1  # one worker process ran them all
    overlap = max_overlap([(r["started"], r["finished"]) for r in results])
    print(
        f"\ncelery -P {pool} -c {TASKS}: {TASKS} x pg_sleep({SLEEP}) finished {measured['finished']:.2f} s "
        f"after sending, up to {overlap} waiting at once; {TASKS} x pg_sleep(0): "
        f"{baseline['finished']:.2f} s"
    )
    # psycopg2 blocking the worker's hub would run the waits one at a time (overlap 1, 20 s).
    # How many overlap is bounded by how fast Celery hands tasks out (~100 per 0.5-1 s here).
    assert overlap >= 10, overlap
    # Green: the burst costs Celery's own time for 100 tasks plus about one pg_sleep, where a
    # blocked hub would add 100 x 0.2 s = 20 s. Connecting 100 times costs some CPU too.
    assert measured["finished"] - baseline["finished"] <= 1.0, out
    # The recipe's promise, the whole burst within a second of sending, holds when Celery itself
    # moves 100 tasks within 0.6 s; on a machine so loaded that it does not, the line above
    # is what is left to check.
    if baseline["finished"] <= 0.6:
        assert measured["finished"] <= 1.0, (measured["finished"], baseline["finished"])


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that contain one same instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_django_pooled_backend_under_celery_gevent(
    start_server: StartServer, recipe_env: dict[str, str], redis_url: str, dsn: str
) -> None:
    """Celery -P gevent with Django's connections from psycogreen.core.django (a pool of 5)."""
    require("celery")
    require("django")
    require("gevent")
    psycopg2 = require("psycopg2")
    url = redis_url.rsplit("/", 1)[0] + "/3"
    app_name = f"psycogreen-recipe-celery-django-{os.getpid()}"
    path = os.pathsep.join(
        filter(None, [str(EXAMPLES / "django_gevent"), recipe_env.get("PYTHONPATH")])
    )
    env = {
        **recipe_env,
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "DJANGO_SETTINGS_MODULE": "recipe.settings",
        "RECIPE_POOL": "5",
        "RECIPE_APP_NAME": app_name,
        "PYTHONPATH": path,
    }
    worker = start_server(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "-P",
            "gevent",
            "-c",
            "20",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
            "-n",
            "recipe-django@localhost",
        ],
        cwd=APP,
        env=env,
        name="celery-django",
    )
    out = run_recipe(APP / "run_django_burst.py", "20", "0.2", env=env)
    results = out["results"]
    assert len(results) == 20, worker.log.read_text()[-3000:]
    assert {r["engine"] for r in results} == {"psycogreen.core.django"}
    pids = {r["backend_pid"] for r in results}
    print(
        f"\ncelery -P gevent, Django pooled: 20 x pg_sleep(0.2) over {len(pids)} connections in {out['elapsed']:.2f} s"
    )
    assert len(pids) <= 5, pids
    assert out["elapsed"] >= 4 * 0.2 - 0.05, out["elapsed"]  # at most 5 at once
    admin = psycopg2.connect(dsn)
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity"
                " WHERE application_name = %s GROUP BY 1",
                [app_name],
            )
            server = dict(cur.fetchall())
    finally:
        admin.close()
    # Back in the pool after each task: at most 5 server connections, none left in a transaction.
    assert set(server) <= {"idle"}, server
    assert 1 <= server.get("idle", 0) <= 5, server
