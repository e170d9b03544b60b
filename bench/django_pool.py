# SPDX-License-Identifier: BSD-3-Clause
"""Django under gunicorn's gevent worker: requests/s with the pooled backend and without it.

    hatch run recipes:python bench/django_pool.py [--dsn DSN] [--seconds S] [--clients N]

It needs Django, gunicorn and psycopg2, and no psycopg 3 (Django would use it): the
``recipes`` environment. Without ``--dsn`` a throwaway PostgreSQL is started. The example
project ``examples/django_gevent`` runs twice, one gevent worker each time, and N client
threads with keep-alive connections request ``/sleep/?s=0`` (one query) for S seconds:

- ``CONN_MAX_AGE=0`` with Django's backend: a new server connection per request;
- ``ENGINE: "psycogreen.core.django"`` with a pool of 10: the request's connection comes
  from the pool and goes back to it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "django_gevent"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(dsn: str, pool: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_DSN": dsn,
        "CONN_MAX_AGE": "0",
        "RECIPE_POOL": str(pool),
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "recipe.wsgi",
        ],
        cwd=APP,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/sleep/?s=0")
            body = json.loads(conn.getresponse().read())
            conn.close()
            if body.get("driver") != "psycopg2":
                raise SystemExit(
                    f"Django uses {body.get('driver')}, not psycopg2: run this without psycopg 3"
                )
            return proc, port
        except OSError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("gunicorn did not start")


def load(port: int, clients: int, seconds: float) -> float:
    count = [0] * clients
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            conn.request("GET", "/sleep/?s=0")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                count[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres()
        dsn = server.start()
    try:
        rates: dict[str, list[float]] = {"connect per request": [], "pooled (10)": []}
        for _ in range(args.rounds):
            for name, pool in (("connect per request", 0), ("pooled (10)", 10)):
                proc, port = serve(dsn, pool)
                try:
                    load(port, args.clients, 1.0)  # warm up
                    rates[name].append(load(port, args.clients, args.seconds))
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(15)
        base = max(rates["connect per request"])
        for name, values in rates.items():
            best = max(values)
            print(
                f"{name:22} {best:8.0f} requests/s  {best / base:5.2f}x   (rounds: {', '.join(f'{v:.0f}' for v in values)})"
            )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
