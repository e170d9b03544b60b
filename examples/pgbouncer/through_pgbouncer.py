"""500 green threads through pgbouncer's 20 server connections, and what transaction pooling breaks.

``python through_pgbouncer.py`` with ``PGBOUNCER_DSN`` (pgbouncer, transaction pooling) and
``DATABASE_DSN`` (the server behind it, for the NOTIFY sender); prints one JSON line.
"""

from __future__ import annotations

import json
import os
import time

from gevent import monkey

monkey.patch_all()  # psycogreen-gevent's plugin patches psycopg2 here

import gevent  # noqa: E402
import gevent.select  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402

import psycogreen.core  # noqa: E402

BOUNCER = os.environ["PGBOUNCER_DSN"]
SERVER = os.environ["DATABASE_DSN"]


def connect(dsn: str = BOUNCER):
    conn = psycopg2.connect(dsn)
    conn.autocommit = (
        True  # every statement its own transaction: the server connection goes back at once
    )
    return conn


def burst(out: dict, n: int = 500) -> None:
    pids: list[int] = []
    errors: list[str] = []

    def one() -> None:
        try:
            conn = connect()
            try:
                cur = conn.cursor()
                cur.execute("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
                pids.append(cur.fetchone()[0])
            finally:
                conn.close()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    gevent.joinall([gevent.spawn(one) for _ in range(n)])
    out["burst"] = {
        "clients": n,
        "ok": len(pids),
        "server_connections": len(set(pids)),
        "elapsed": time.perf_counter() - start,
        "errors": errors[:5],
    }


def session_state(out: dict) -> None:
    a, b = connect(), connect()
    try:
        # A session-level SET runs in a transaction of its own; its server connection goes back
        # to the pool with the setting, and the next client to get that connection inherits it.
        a.cursor().execute("SET statement_timeout = '4321ms'")
        cur = b.cursor()
        cur.execute("SHOW statement_timeout")
        out["set_leaks_to_other_client"] = cur.fetchone()[0]
        cur.execute("RESET statement_timeout")
        # SET LOCAL lasts for the transaction, which pgbouncer never splits: safe.
        a.autocommit = False
        with a.cursor() as c:
            c.execute("SET LOCAL statement_timeout = '1234ms'")
            c.execute("SHOW statement_timeout")
            inside = c.fetchone()[0]
        a.commit()
        cur.execute("SHOW statement_timeout")
        out["set_local"] = {"inside": inside, "other_client_after": cur.fetchone()[0]}
    finally:
        a.close()
        b.close()


def listen(out: dict) -> None:
    listener = connect()
    sender = connect(SERVER)
    try:
        listener.cursor().execute("LISTEN recipe_channel")
        sender.cursor().execute("NOTIFY recipe_channel, 'hello'")
        ready = gevent.select.select([listener], [], [], 0.5)[0]
        if ready:
            listener.poll()
        out["listen_received"] = [n.payload for n in listener.notifies]
        # The same LISTEN straight to the server, for comparison.
        direct = connect(SERVER)
        direct.cursor().execute("LISTEN recipe_channel")
        sender.cursor().execute("NOTIFY recipe_channel, 'hello'")
        if gevent.select.select([direct], [], [], 0.5)[0]:
            direct.poll()
        out["listen_direct_received"] = [n.payload for n in direct.notifies]
        direct.close()
    finally:
        try:
            listener.close()
        finally:
            sender.close()


def deadline(out: dict) -> None:
    # psycogreen's query deadline cancels on the server: the cancel request goes to pgbouncer,
    # which forwards it to the server connection this client holds at that moment.
    conn = connect()
    try:
        conn.autocommit = False
        start = time.perf_counter()
        try:
            with psycogreen.core.timeout(0.2):
                conn.cursor().execute("SELECT pg_sleep(5)")
            out["deadline"] = {"raised": None}
            return
        except psycopg2.errors.QueryCanceled as exc:
            raised = type(exc).__name__
        elapsed = time.perf_counter() - start
        conn.rollback()
        cur = conn.cursor()
        cur.execute("SELECT 7")
        out["deadline"] = {"raised": raised, "elapsed": elapsed, "after": cur.fetchone()[0]}
    finally:
        conn.close()


def main() -> None:
    out: dict = {"scheduler": psycogreen.core.current_scheduler()}
    burst(out)
    session_state(out)
    listen(out)
    deadline(out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
