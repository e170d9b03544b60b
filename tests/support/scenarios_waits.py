# SPDX-License-Identifier: BSD-3-Clause
"""Scenarios for the backends' waits themselves (run by ``tests/green/test_waits.py``)."""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg2

from tests.support.green import Scheduler


def _waits(sched: Scheduler) -> tuple[Any, Any]:
    if sched.name == "gevent":
        import psycogreen.gevent as backend
    else:
        import psycogreen.eventlet as backend
    backend.patch_psycopg()
    return backend._wait_read, backend._wait_write


def fd_reused(sched: Scheduler, dsn: str, rounds: int = 20) -> dict[str, Any]:
    """Wait on an fd, close it and wait on a new socket given the same number, same event.

    No hub iteration runs between the two waits' registrations: a backend that kept a watcher
    (libev) or a registration (epoll) for the old socket would never see the new one ready.
    """
    wait_read, wait_write = _waits(sched)
    out: dict[str, Any] = {"same_fd": 0, "ready": 0, "timed_out": 0}

    def one_round() -> None:
        a, b = socket.socketpair()
        b.send(b"x")
        fd = a.fileno()
        assert wait_read(fd)
        assert wait_write(fd)
        a.close()
        b.close()
        c, d = socket.socketpair()
        if c.fileno() != fd:  # make the new socket take the old number
            os.dup2(c.fileno(), fd)
            c.close()
            c = socket.socket(fileno=fd)
        out["same_fd"] += 1
        sched.spawn(lambda: (sched.sleep(0.02), d.send(b"y")))
        # Readable only once the peer has written: the new socket's own readiness.
        if wait_read(fd) and c.recv(1) == b"y":
            out["ready"] += 1
        c.close()
        d.close()

    def run() -> None:
        for _ in range(rounds):
            with sched.timeout(2):
                try:
                    one_round()
                except sched.Timeout:
                    out["timed_out"] += 1

    (result,) = sched.join([sched.spawn(run)])
    if isinstance(result, BaseException):
        raise result
    # The same through psycopg2: connections closed and reopened, numbers reused.
    numbers = set()
    out["queries"] = 0

    def queries() -> None:
        for _ in range(rounds):
            conn = psycopg2.connect(dsn)
            numbers.add(conn.fileno())
            cur = conn.cursor()
            cur.execute("SELECT 1")
            out["queries"] += cur.fetchone()[0]
            conn.close()

    task = sched.spawn(queries)
    with sched.timeout(20):
        try:
            sched.join([task])
        except sched.Timeout:
            out["stuck"] = True
    out["distinct_fds"] = len(numbers)
    return out
