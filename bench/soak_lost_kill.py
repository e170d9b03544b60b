# SPDX-License-Identifier: BSD-3-Clause
"""A kill that the greenlet survives: the soak's finding, reproduced on its own.

    python bench/soak_lost_kill.py [gevent|eventlet] [--legacy]

``--legacy``: the same under psycogreen 1.0.2's callback (``bench/legacy.py``), for contrast.

A greenlet runs ``SELECT pg_sleep(5)`` under its own ``Timeout(0.3)`` and catches that
Timeout, as code that retries does. It is killed at 0.28 s, while the network to the server
is frozen (the soak's proxy), so that the kill's cancel request cannot be sent at once:
psycogreen waits up to ``INTERRUPT_GRACE`` (50 ms) for it, the Timeout expires 20 ms into that
wait and propagates instead of the kill (``GreenletExit`` is only its ``__context__``). The
greenlet catches its Timeout and goes on: the kill is lost. gevent's ``Greenlet.kill()``, which
blocks until the greenlet has ended, then waits for as long as it keeps running (here: bounded
with a timeout, and the greenlet stops by itself after a few seconds).

The same happens with a live network whenever the cancel request takes longer than the time
left until the Timeout; the soak saw it for 2 kills in 504 under eventlet in 300 s, and for 6
in 352 in 90 s with more chaos. Under psycogreen 1.0.2 the kill always ends the greenlet.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))  # tests.support.monkey

SCHED = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "gevent"
LEGACY = "--legacy" in sys.argv
if LEGACY:
    import os

    os.environ["PSYCOGREEN_GEVENT_AUTOPATCH"] = "0"  # 1.0.2 alone

from tests.support.monkey import patch_for  # noqa: E402 (patches before anything else)

patch_for(SCHED)

import importlib  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import greenlet  # noqa: E402
import psycopg2  # noqa: E402
import psycopg2.extensions  # noqa: E402

sys.path.append(str(HERE))
from soak_server import Server  # noqa: E402


def main() -> int:
    if LEGACY:
        import legacy

        callback = getattr(legacy.load(SCHED), f"{SCHED}_wait_callback")
        psycopg2.extensions.set_wait_callback(callback)
    else:
        importlib.import_module(f"psycogreen.{SCHED}").patch_psycopg()
    if SCHED == "gevent":
        import gevent

        spawn, sleep, timeout = gevent.spawn, gevent.sleep, gevent.Timeout
    else:
        import eventlet

        spawn, sleep, timeout = eventlet.spawn, eventlet.sleep, eventlet.Timeout
    server = Server()
    server.start()
    proxy = subprocess.Popen(
        [sys.executable, str(HERE / "soak_proxy.py"), "127.0.0.1", str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdin is not None
        assert proxy.stdout is not None
        port = int(proxy.stdout.readline())
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        seen: list[str] = []

        def victim() -> None:
            for attempt in range(3):  # a retry loop, bounded: the greenlet ends by itself
                conn = psycopg2.connect(dsn)
                try:
                    with timeout(0.3):
                        conn.cursor().execute("SELECT pg_sleep(5)")
                    seen.append(f"attempt {attempt}: the query completed")
                except timeout as exc:
                    context = type(exc.__context__).__name__ if exc.__context__ else None
                    seen.append(f"attempt {attempt}: Timeout, its __context__: {context}")
                    sleep(1)
                except greenlet.GreenletExit:
                    seen.append(f"attempt {attempt}: GreenletExit, the greenlet ends")
                    raise
                finally:
                    conn.close()

        task = spawn(victim)
        sleep(0.1)  # connected, the query running
        proxy.stdin.write("freeze 1\n")  # the network is dead for 1 s
        proxy.stdin.flush()
        proxy.stdout.readline()
        sleep(0.18)
        started = time.monotonic()
        if SCHED == "gevent":
            task.kill(timeout=1.5)  # blocks until the greenlet has ended, 1.5 s at most
        else:
            task.kill()
        name = f"{SCHED}{' (1.0.2)' if LEGACY else ''}"
        print(f"{name}: kill() returned after {time.monotonic() - started:.2f} s")
        sleep(0.2)
        print(f"{name}: after kill(), the greenlet is dead: {task.dead}")
        for _ in range(50):
            if task.dead:
                break
            sleep(0.1)
        for line in seen:
            print(f"{name}:   {line}")
        lost = not seen or not seen[0].endswith("the greenlet ends")
        print(f"{name}: the kill was {'LOST' if lost else 'delivered'}")
        return 1 if lost else 0
    finally:
        if proxy.stdin is not None:
            proxy.stdin.write("quit\n")
            proxy.stdin.flush()
        proxy.wait(5)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
