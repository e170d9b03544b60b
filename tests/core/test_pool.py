# SPDX-License-Identifier: BSD-3-Clause
"""The pool without a scheduler: native threads and the scheduler-free backend.

These run in the test process (nothing is monkey-patched); the schedulers' suites are in
``tests/green/test_pool.py``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from psycogreen.core.backend import current_backend
from psycogreen.core.pool import (
    ConnectionPool,
    NullConnectionPool,
    PoolClosed,
    PoolMisuseError,
    PoolTimeout,
    TooManyRequests,
)

pytestmark = pytest.mark.postgres

STATS_KEYS = {
    "pool_min",
    "pool_max",
    "pool_size",
    "pool_available",
    "requests_waiting",
    "usage_ms",
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
}


@pytest.fixture
def app(request: pytest.FixtureRequest) -> str:
    return f"psycogreen-core-pool-{os.getpid()}-{request.node.name}"[:63]


@pytest.fixture
def pools(dsn: str, app: str) -> Iterator[Any]:
    """Make pools for one test (``pools(min_size=..., ...)``); close them afterwards."""
    made: list[ConnectionPool] = []

    def make(cls: type[ConnectionPool] = ConnectionPool, **options: Any) -> ConnectionPool:
        options.setdefault("kwargs", {"application_name": app})
        pool = cls(dsn, **options)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def backends(conn: Any, app: str) -> set[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
        return {row[0] for row in cur.fetchall()}


def eventually(predicate: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_the_scheduler_free_backend_is_used() -> None:
    assert current_backend().name == "blocking"


def test_connection_commits_on_success_and_rolls_back_on_error(pools: Any, conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS pool_t (v int)")
        cur.execute("TRUNCATE pool_t")
    pool = pools(min_size=1)
    with pool.connection() as c, c.cursor() as cur:
        cur.execute("INSERT INTO pool_t VALUES (1)")

    def fail() -> None:
        with pool.connection() as c, c.cursor() as cur:
            cur.execute("INSERT INTO pool_t VALUES (2)")
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        fail()
    with conn.cursor() as cur:
        cur.execute("SELECT array_agg(v) FROM pool_t")
        assert cur.fetchone()[0] == [1]
    with pool.connection() as c:  # the same connection, back to idle
        assert c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert pool.get_stats()["pool_size"] == 1


def test_putconn_rolls_back_a_transaction_and_an_error(pools: Any) -> None:
    pool = pools(min_size=1)
    c = pool.getconn()
    with c.cursor() as cur:
        cur.execute("SELECT 1")
    assert c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    pool.putconn(c)
    assert c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    c = pool.getconn()
    with pytest.raises(psycopg2.errors.DivisionByZero), c.cursor() as cur:
        cur.execute("SELECT 1 / 0")
    pool.putconn(c)
    again = pool.getconn()
    assert again is c
    assert again.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    pool.putconn(again)
    assert pool.get_stats()["returns_bad"] == 0


def test_closed_connections_are_replaced(pools: Any) -> None:
    pool = pools(min_size=2)
    pool.wait()
    c = pool.getconn()
    c.close()
    pool.putconn(c)
    assert eventually(lambda: pool.get_stats()["pool_available"] == 2)
    stats = pool.get_stats()
    assert stats["returns_bad"] == 1
    assert stats["connections_num"] == 3
    assert stats.keys() == STATS_KEYS


def test_not_open_closed_and_not_reopened(dsn: str) -> None:
    pool = ConnectionPool(dsn, open=False)
    with pytest.raises(PoolClosed, match="not open yet"):
        pool.getconn()
    with pool:
        with pool.connection() as c, c.cursor() as cur:
            cur.execute("SELECT 1")
        assert not pool.closed
    assert pool.closed
    with pytest.raises(PoolClosed, match="is closed"):
        pool.getconn()
    with pytest.raises(PoolClosed, match="cannot be reopened"):
        pool.open()
    pool.close()  # again: nothing


def test_threads_share_max_size_connections(pools: Any, conn: Any, app: str) -> None:
    pool = pools(min_size=1, max_size=4)
    errors: list[BaseException] = []
    seen: set[int] = set()

    def work() -> None:
        try:
            for _ in range(25):
                with pool.connection() as c, c.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid()")
                    seen.add(cur.fetchone()[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= len(seen) <= 4
    stats = pool.get_stats()
    assert stats["requests_num"] == 400
    assert stats["pool_size"] == stats["pool_available"] <= 4
    assert len(backends(conn, app)) == stats["pool_size"]


def test_timeout_and_max_waiting(pools: Any) -> None:
    pool = pools(min_size=1, max_waiting=1)
    held = pool.getconn()
    outcome: list[Any] = []

    def wait() -> None:
        start = time.monotonic()
        try:
            pool.getconn(timeout=0.3)
        except PoolTimeout:
            outcome.append(time.monotonic() - start)

    t = threading.Thread(target=wait)
    t.start()
    assert eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    with pytest.raises(TooManyRequests):
        pool.getconn(timeout=5)
    t.join()
    assert len(outcome) == 1
    assert 0.3 <= outcome[0] < 0.3 + 0.1
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)  # nothing idle: no wait at all
    pool.putconn(held)
    assert pool.getconn(timeout=0) is held  # idle: no wait needed
    assert pool.get_stats()["requests_errors"] == 3


def test_a_returned_connection_goes_to_the_first_waiter(pools: Any) -> None:
    pool = pools(min_size=1)
    held = pool.getconn()
    order: list[int] = []

    def wait(i: int) -> None:
        with pool.connection(timeout=5):
            order.append(i)

    threads = []
    for i in range(5):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        assert eventually(lambda n=i + 1: pool.get_stats()["requests_waiting"] == n)
    pool.putconn(held)
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]


def test_ctrl_c_while_waiting_leaks_nothing(pools: Any) -> None:
    pool = pools(min_size=1)
    held = pool.getconn()
    previous = signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.getconn(timeout=5)
    finally:
        signal.signal(signal.SIGALRM, previous)
    stats = pool.get_stats()
    assert stats["requests_waiting"] == 0
    assert stats["requests_errors"] == 1
    pool.putconn(held)
    assert pool.getconn(timeout=0) is held


def test_misuse(pools: Any) -> None:
    one = pools(min_size=1, name="one")
    two = pools(min_size=1, name="two")
    c = one.getconn()
    with pytest.raises(PoolMisuseError, match="checked out of the pool 'one'"):
        two.putconn(c)
    one.putconn(c)
    with pytest.raises(PoolMisuseError, match="already back in the pool 'one'"):
        one.putconn(c)
    raw = psycopg2.connect(one.conninfo)
    try:
        with pytest.raises(PoolMisuseError, match="nor of any other pool"):
            one.putconn(raw)
    finally:
        raw.close()


def test_max_lifetime_replaces_connections(pools: Any) -> None:
    pool = pools(min_size=1, max_lifetime=0.2)
    with pool.connection() as c:
        first = c.get_backend_pid()
    time.sleep(0.3)
    with pool.connection(timeout=5) as c:
        assert c.get_backend_pid() != first
    assert first not in backends_of(pool)


def backends_of(pool: ConnectionPool) -> set[int]:
    raw = psycopg2.connect(pool.conninfo)
    try:
        return backends(raw, pool.kwargs["application_name"])  # type: ignore[index]
    finally:
        raw.close()


def test_max_idle_shrinks_to_min_size(pools: Any) -> None:
    pool = pools(min_size=1, max_size=4, max_idle=0.3)
    held = [pool.getconn(timeout=5) for _ in range(4)]
    for c in held:
        pool.putconn(c)
    assert pool.get_stats()["pool_size"] == 4
    assert eventually(lambda: pool.get_stats()["pool_size"] == 1, 3)
    assert len(backends_of(pool)) == 1


def test_check_resize_and_drain(pools: Any, conn: Any, app: str) -> None:
    pool = pools(min_size=2, max_size=2)
    pool.wait()
    first = backends(conn, app)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) pid", [list(first)])
    assert eventually(lambda: not backends(conn, app))
    pool.check()
    assert eventually(lambda: pool.get_stats()["pool_available"] == 2)
    assert pool.get_stats()["connections_lost"] == 2
    second = backends(conn, app)
    assert len(second) == 2
    assert not second & first

    pool.resize(3, 5)
    assert eventually(lambda: pool.get_stats()["pool_available"] == 3)
    assert (pool.min_size, pool.max_size) == (3, 5)
    pool.resize(1, 1)
    assert pool.get_stats()["pool_size"] == 1

    pool.drain()
    assert eventually(lambda: pool.get_stats()["pool_available"] == 1)
    assert not backends(conn, app) & second


def test_configure_reset_and_close_returns(pools: Any) -> None:
    configured: list[int] = []
    resets: list[int] = []

    def configure(c: Any) -> None:
        c.autocommit = True
        configured.append(c.get_backend_pid())

    pool = pools(
        min_size=1,
        configure=configure,
        reset=lambda c: resets.append(c.get_backend_pid()),
        close_returns=True,
    )
    c = pool.getconn()
    assert c.autocommit is True
    pid = c.get_backend_pid()
    c.close()  # returns it
    assert not c.closed
    assert resets == [pid]
    assert pool.getconn() is c
    pool.putconn(c)
    assert configured == [pid]


def test_configure_must_leave_the_connection_idle(pools: Any) -> None:
    def configure(c: Any) -> None:
        with c.cursor() as cur:
            cur.execute("SELECT 1")  # a transaction left open

    pool = pools(min_size=1, configure=configure)
    with pytest.raises(PoolTimeout, match="initialization incomplete"):
        pool.wait(0.5)
    assert pool.closed
    assert pool.get_stats()["connections_errors"] == 0  # it connected: configure failed


def test_null_pool(pools: Any, conn: Any, app: str) -> None:
    pool = pools(NullConnectionPool, max_size=1)
    pool.wait()
    with pool.connection() as c:
        first = c.get_backend_pid()
    assert eventually(lambda: not backends(conn, app))
    with pool.connection() as c:
        assert c.get_backend_pid() != first
    held = pool.getconn()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    t.start()
    assert eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    pool.putconn(held)  # handed to the waiter, not closed
    t.join()
    assert got == [held]
    pool.putconn(held)
    assert held.closed
    with pytest.raises(ValueError, match="min_size 0"):
        NullConnectionPool(min_size=1, open=False)


def test_backoff_doubles_with_jitter_up_to_the_give_up_time() -> None:
    from psycogreen.core.pool._backoff import Backoff

    attempt = Backoff(10.0, now=0.0)
    first = attempt.next_delay(0.0)
    assert 0.9 <= first <= 1.1
    now = first
    delays = [first]
    while not attempt.expired(now):
        delay = attempt.next_delay(now)
        delays.append(delay)
        now += delay
    assert delays[1] == pytest.approx(2 * first)
    assert delays[2] == pytest.approx(4 * first)
    assert now == pytest.approx(10.0)  # the last attempt is at the give-up time, not after
    # never longer than the time since the first failure plus the first delay
    elapsed = 0.0
    for delay in delays:
        assert delay <= elapsed + first + 1e-9
        elapsed += delay


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_size": -1}, "min_size cannot be negative"),
        ({"min_size": 4, "max_size": 2}, "must be at least min_size"),
        ({"min_size": 0, "max_size": 0}, "max_size must be at least 1"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"max_waiting": -1}, "max_waiting must be 0"),
        ({"num_workers": 0}, "num_workers must be at least 1"),
    ],
)
def test_settings_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionPool("", open=False, **options)


def _dead_dsn() -> str:
    """A DSN on a port nothing listens on: connects fail at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"


def test_close_fails_the_waiting_requests(pools: Any) -> None:
    pool = pools(min_size=1)
    held = pool.getconn()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn(timeout=10)
        except PoolClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    assert eventually(lambda: pool.get_stats()["requests_waiting"] == 1)
    pool.close()
    t.join(5)
    assert len(errors) == 1
    assert not held.closed  # handed out: closed when it comes back
    pool.putconn(held)
    assert held.closed


def test_failing_reset_and_check_discard_the_connection(pools: Any) -> None:
    calls = {"check": 0}

    def check(c: Any) -> None:
        calls["check"] += 1
        if calls["check"] == 1:
            message = "the first check fails"
            raise psycopg2.OperationalError(message)

    def reset(c: Any) -> None:
        message = "reset fails"
        raise RuntimeError(message)

    pool = pools(min_size=2, check=check, reset=reset)
    pool.wait()
    c = pool.getconn()  # the first connection failed its check: the other one
    assert calls["check"] == 2
    pool.putconn(c)  # reset fails: discarded, replaced
    assert c.closed
    assert eventually(lambda: pool.get_stats()["pool_available"] == 2)
    stats = pool.get_stats()
    assert stats["connections_lost"] == 1
    assert stats["returns_bad"] == 1
    assert stats["connections_num"] == 4


def test_reconnect_failed_and_wait_timeout_on_a_dead_server() -> None:
    calls: list[float] = []
    start = time.monotonic()
    pool = ConnectionPool(
        _dead_dsn(),
        min_size=1,
        reconnect_timeout=0.3,
        reconnect_failed=lambda _pool: calls.append(time.monotonic() - start),
    )
    try:
        with pytest.raises(PoolTimeout, match="initialization incomplete"):
            pool.wait(1.0)
        assert pool.closed
        assert calls
        assert 0.25 <= calls[0] < 1.0
        assert pool.get_stats()["connections_errors"] >= 2
    finally:
        pool.close()


def test_null_pool_wait_on_a_dead_server() -> None:
    pool = NullConnectionPool(_dead_dsn())
    with pytest.raises(PoolTimeout, match="no connection could be opened"):
        pool.wait(2)
    assert pool.closed


def test_open_and_wait(dsn: str, app: str) -> None:
    pool = ConnectionPool(dsn, min_size=2, open=False, kwargs={"application_name": app})
    try:
        pool.open(wait=True, timeout=10)
        assert pool.get_stats()["pool_available"] == 2
        pool.open()  # open already: nothing
    finally:
        pool.close()


def test_a_pool_dropped_without_close_is_collected(dsn: str, app: str, conn: Any) -> None:
    """Its background task holds it weakly: the pool and its connections go away."""
    import gc
    import weakref

    pool = ConnectionPool(dsn, min_size=2, kwargs={"application_name": app})
    pool.wait()
    assert len(backends(conn, app)) == 2
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    assert eventually(lambda: not backends(conn, app))


def test_close_ends_a_wait_in_progress() -> None:
    pool = ConnectionPool(_dead_dsn(), min_size=1)
    outcome: list[Any] = []

    def wait() -> None:
        start = time.monotonic()
        try:
            pool.wait(10)
        except PoolClosed:
            outcome.append(time.monotonic() - start)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    pool.close()
    t.join(5)
    assert len(outcome) == 1
    assert outcome[0] < 2  # not the 10 s of wait()'s timeout


# --- the pool's events (psycogreen.core.events) ------------------------------------------------


def test_the_pool_reports_its_events(pools: Any) -> None:
    from psycogreen.core import events

    seen: list[Any] = []
    configured = {"calls": 0}

    def configure(conn: Any) -> None:
        configured["calls"] += 1
        if configured["calls"] == 1:  # the first connect fails: the next one is a reconnect
            message = "the first connection is refused"
            raise psycopg2.OperationalError(message)

    with events.subscribed(seen.append):
        pool = pools(min_size=1, max_size=1, configure=configure, name="evented")
        pool.wait(timeout=10)
        held = pool.getconn()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.2)  # waits its whole timeout

        def give_back() -> None:
            time.sleep(0.2)
            held.close()  # returned closed: discarded and replaced
            pool.putconn(held)

        helper = threading.Thread(target=give_back)
        helper.start()
        conn = pool.getconn(timeout=10)  # waits for the replacement
        helper.join()
        pool.putconn(conn)
    kinds = [type(record).__name__ for record in seen]
    assert "PoolReconnected" in kinds, kinds
    reconnected = next(r for r in seen if type(r).__name__ == "PoolReconnected")
    assert reconnected.pool == "evented"
    assert reconnected.attempts == 2, reconnected
    assert reconnected.pid is not None, reconnected
    timed_out = next(r for r in seen if type(r).__name__ == "PoolCheckoutTimedOut")
    assert 0.2 <= timed_out.seconds < 1.0, timed_out
    assert timed_out.in_use == 1, timed_out
    discarded = next(r for r in seen if type(r).__name__ == "PoolConnectionDiscarded")
    assert discarded.reason == "closed", discarded
    waited = next(r for r in seen if type(r).__name__ == "PoolCheckoutWaited")
    assert waited.seconds >= 0.1, waited
