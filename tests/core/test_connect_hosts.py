# SPDX-License-Identifier: BSD-3-Clause
"""How psycogreen works out where a DSN connects, as libpq's connectOptions2() does.

Planning does no I/O, so these run in the test process. The
attempt order tests drive the host loop with a recording ``connect`` in place of psycopg2's:
a standby server, or a server that fails one way and then another, is not something the test
server can be.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from psycogreen.core import _connect_hosts as ch
from psycogreen.core import _libpq
from psycogreen.core._compat import mark_polled
from psycogreen.core._connect_hosts import Attempt, plan_connect


def slots(dsn: str, defaults: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    plan = plan_connect(dsn, defaults or {})
    assert plan is not None
    return [(s.host, s.hostaddr, s.port) for s in plan.slots]


def libpq_defaults() -> dict[str, str]:
    lib = _libpq.load()
    assert lib is not None, "psycopg2's libpq cannot be reached through ctypes"
    return lib.conndefaults()


def test_single_port_applies_to_every_host() -> None:
    assert slots("host=a,b,c port=6000") == [
        ("a", "", "6000"),
        ("b", "", "6000"),
        ("c", "", "6000"),
    ]


def test_ports_pair_with_hosts() -> None:
    assert slots("host=a,b port=1,2") == [("a", "", "1"), ("b", "", "2")]


def test_uri_hosts_and_ports() -> None:
    assert slots("postgresql://a:1,b:2/db") == [("a", "", "1"), ("b", "", "2")]


def test_empty_entries_mean_libpq_defaults() -> None:
    assert slots("host=a,,/run/pg port=1,,3") == [
        ("a", "", "1"),
        ("", "", ""),
        ("/run/pg", "", "3"),
    ]
    assert slots("dbname=x") == [("", "", "")]


def test_hostaddr_counts_the_slots() -> None:
    assert slots("hostaddr=10.0.0.1,10.0.0.2") == [("", "10.0.0.1", ""), ("", "10.0.0.2", "")]
    assert slots("host=a,b hostaddr=10.0.0.1,") == [("a", "10.0.0.1", ""), ("b", "", "")]


def test_mismatched_lists_are_left_to_libpq() -> None:
    assert plan_connect("host=a,b port=1,2,3", {}) is None
    assert plan_connect("host=a,b,c hostaddr=10.0.0.1,10.0.0.2", {}) is None


def test_unparsable_dsn_is_left_to_psycopg2() -> None:
    assert plan_connect("host=a = b", {}) is None


def test_a_service_is_left_to_libpq() -> None:
    assert plan_connect("service=svc host=a,b", {}) is None


def test_defaults_fill_what_the_dsn_does_not_give() -> None:
    defaults = {"host": "e1,e2", "port": "7", "connect_timeout": "9"}
    assert slots("dbname=x", defaults) == [("e1", "", "7"), ("e2", "", "7")]
    assert slots("host=d port=8", defaults) == [("d", "", "8")]
    plan = plan_connect("dbname=x", defaults)
    assert plan is not None
    assert plan.connect_timeout == 9
    plan = plan_connect("dbname=x connect_timeout=3", defaults)
    assert plan is not None
    assert plan.connect_timeout == 3


def test_libpq_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PGHOST": "e1,e2",
        "PGPORT": "7",
        "PGCONNECT_TIMEOUT": "9",
        "PGTARGETSESSIONATTRS": "prefer-standby",
        "PGSERVICE": "",
    }.items():
        monkeypatch.setenv(name, value)
    defaults = libpq_defaults()
    assert slots("dbname=x", defaults) == [("e1", "", "7"), ("e2", "", "7")]
    plan = plan_connect("dbname=x", defaults)
    assert plan is not None
    assert (plan.connect_timeout, plan.prefer_standby) == (9, True)


def test_libpq_reads_the_service_of_pgservice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "services.conf"
    path.write_text(
        "# comment\n[other]\nhost=wrong\n\n[svc]\n  host=s1,s2\nport=5\nconnect_timeout=4\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PGSERVICEFILE", str(path))
    monkeypatch.setenv("PGSERVICE", "svc")
    monkeypatch.setenv("PGHOST", "envhost")
    defaults = libpq_defaults()
    # the service wins over the environment, the DSN over both
    assert slots("dbname=x", defaults) == [("s1", "", "5"), ("s2", "", "5")]
    assert slots("host=d", defaults) == [("d", "", "5")]
    plan = plan_connect("dbname=x", defaults)
    assert plan is not None
    assert plan.connect_timeout == 4


def test_load_balance_from_the_dsn_or_the_defaults() -> None:
    plan = plan_connect("host=a,b load_balance_hosts=random", {})
    assert plan is not None
    assert plan.load_balance
    plan = plan_connect("host=a,b", {"load_balance_hosts": "random"})
    assert plan is not None
    assert plan.load_balance
    plan = plan_connect("host=a,b", {"load_balance_hosts": "disable"})
    assert plan is not None
    assert not plan.load_balance


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10", 10.0), (" 5 ", 5.0), ("+4", 4.0), ("1", 2.0), ("2", 2.0), ("0", None), ("-3", None)],
)
def test_connect_timeout_read_as_libpq_does(value: str, seconds: float | None) -> None:
    plan = plan_connect(f"host=a connect_timeout='{value}'", {})
    assert plan is not None
    assert plan.connect_timeout == seconds


@pytest.mark.parametrize("value", ["soon", "1.5", "", "10s"])
def test_bad_connect_timeout_names_the_option(value: str) -> None:
    with pytest.raises(psycopg2.OperationalError) as info:
        plan_connect(f"host=a connect_timeout='{value}'", {})
    assert str(info.value) == f'connect_timeout must be a whole number of seconds, not "{value}"\n'


@pytest.mark.parametrize(
    ("attempt", "text"),
    [
        (Attempt("a", "10.0.0.1", "5"), 'connection to server at "a" (10.0.0.1), port 5'),
        (Attempt("10.0.0.1", "", ""), 'connection to server at "10.0.0.1", port 5432'),
        (Attempt("", "::1", "7"), 'connection to server at "::1", port 7'),
        (Attempt("/run/pg", "", "7"), 'connection to server on socket "/run/pg/.s.PGSQL.7"'),
        (Attempt("@abstract", "", "7"), 'connection to server on socket "@abstract/.s.PGSQL.7"'),
        (Attempt("", "", ""), "connection to server on the default socket, port 5432"),
    ],
)
def test_attempts_are_named_as_libpq_names_them(attempt: Attempt, text: str) -> None:
    assert attempt.describe() == text


def test_attempt_dsn_keeps_the_name_for_tls_and_pgpass() -> None:
    params = psycopg2.extensions.parse_dsn(
        "host=a,b port=1,2 sslmode=verify-full user=u passfile=/p"
    )
    dsn = ch._attempt_dsn(params, Attempt("db.example", "10.0.0.1", "2"), None)
    assert psycopg2.extensions.parse_dsn(dsn) == {
        "host": "db.example",
        "hostaddr": "10.0.0.1",
        "port": "2",
        "sslmode": "verify-full",
        "user": "u",
        "passfile": "/p",
    }
    # unset host options are passed empty, so libpq takes none from the environment
    dsn = ch._attempt_dsn({"dbname": "x"}, Attempt("", "", ""), "read-write")
    assert psycopg2.extensions.parse_dsn(dsn) == {
        "dbname": "x",
        "host": "",
        "hostaddr": "",
        "port": "",
        "target_session_attrs": "read-write",
    }


# --- the host loop ---------------------------------------------------------------------------------


class Recorder:
    """A ``connect`` that fails with the given messages, in order, then succeeds.

    The failures are those of a connection the wait callback polled (libpq's message then lacks
    the server's name), or with ``polled=False`` libpq's whole message from before any poll.
    """

    def __init__(self, *failures: str, polled: bool = True) -> None:
        self.failures = list(failures)
        self.polled = polled
        self.tried: list[dict[str, str]] = []

    def __call__(self, dsn: str) -> Any:
        self.tried.append(psycopg2.extensions.parse_dsn(dsn))
        if self.failures:
            exc = psycopg2.OperationalError(self.failures.pop(0))
            if self.polled:
                mark_polled(exc)
            raise exc
        return "conn"


def run(dsn: str, connect: Recorder, deadline: float | None = None) -> Any:
    plan = plan_connect(dsn, {})
    assert plan is not None
    plan.shuffle = lambda items: items.reverse()
    return ch._run(plan, dsn, connect, deadline)


def test_hosts_tried_in_order_until_one_answers() -> None:
    rec = Recorder("Connection refused\n")
    assert run("host=10.0.0.1,10.0.0.2 port=5", rec) == "conn"
    assert [t["host"] for t in rec.tried] == ["10.0.0.1", "10.0.0.2"]


def test_single_numeric_host_gets_the_dsn_untouched() -> None:
    rec = Recorder()
    run("host=10.0.0.1 port=5 connect_timeout=3", rec)
    assert rec.tried == [{"host": "10.0.0.1", "port": "5", "connect_timeout": "3"}]


def test_errors_aggregated_and_named() -> None:
    rec = Recorder("Connection refused\n", 'FATAL:  database "x" does not exist\n')
    with pytest.raises(psycopg2.OperationalError) as info:
        run("host=10.0.0.1,/run/pg port=5", rec)
    assert str(info.value) == (
        'connection to server at "10.0.0.1", port 5 failed: Connection refused\n'
        'connection to server on socket "/run/pg/.s.PGSQL.5" failed: FATAL:  database "x" does not exist\n'
    )


def test_option_error_raised_once_unchanged() -> None:
    rec = Recorder('invalid sslmode value: "x"\n', 'invalid sslmode value: "x"\n', polled=False)
    with pytest.raises(psycopg2.OperationalError) as info:
        run("host=10.0.0.1,10.0.0.2", rec)
    assert str(info.value) == 'invalid sslmode value: "x"\n'


def test_prefer_standby_looks_for_a_standby_first() -> None:
    rec = Recorder("server is not in hot standby mode\n", "server is not in hot standby mode\n")
    run("host=10.0.0.1,10.0.0.2 target_session_attrs=prefer-standby", rec)
    assert [(t["host"], t["target_session_attrs"]) for t in rec.tried] == [
        ("10.0.0.1", "standby"),
        ("10.0.0.2", "standby"),
        ("10.0.0.1", "any"),
    ]


def test_target_session_attrs_passed_to_each_attempt() -> None:
    rec = Recorder("session is read-only\n")
    run("host=10.0.0.1,10.0.0.2 target_session_attrs=read-write", rec)
    assert [t["target_session_attrs"] for t in rec.tried] == ["read-write", "read-write"]


def test_load_balance_shuffles_the_hosts() -> None:
    rec = Recorder("refused\n", "refused\n")
    run("host=10.0.0.1,10.0.0.2,10.0.0.3 load_balance_hosts=random", rec)
    assert [t["host"] for t in rec.tried] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]


def test_expired_deadline_stops_before_the_next_host() -> None:
    rec = Recorder("refused\n")
    with pytest.raises(psycopg2.OperationalError) as info:
        run("host=10.0.0.1,10.0.0.2 port=5", rec, deadline=time.monotonic() - 1)
    assert rec.tried == []
    assert str(info.value) == 'connection to server at "10.0.0.1", port 5 failed: timeout expired\n'


def test_names_resolved_each_address_an_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def getaddrinfo(host: str, *args: Any) -> list[Any]:
        if host == "db.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0)),
            ]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    rec = Recorder("refused\n", "refused\n")
    with pytest.raises(psycopg2.OperationalError) as info:
        run("host=nowhere.example,db.example port=5", rec)
    assert [(t["host"], t["hostaddr"]) for t in rec.tried] == [
        ("db.example", "10.0.0.1"),
        ("db.example", "::1"),
    ]
    assert str(info.value) == (
        'could not translate host name "nowhere.example" to address: Name or service not known\n'
        'connection to server at "db.example" (10.0.0.1), port 5 failed: refused\n'
        'connection to server at "db.example" (::1), port 5 failed: refused\n'
    )


def test_a_host_listed_twice_is_reported_twice() -> None:
    rec = Recorder("refused\n", "refused\n")
    with pytest.raises(psycopg2.OperationalError) as info:
        run("host=10.0.0.1,10.0.0.1 port=5", rec)
    assert str(info.value) == 'connection to server at "10.0.0.1", port 5 failed: refused\n' * 2
