# SPDX-License-Identifier: BSD-3-Clause
"""Connect tests every backend passes: connect_timeout, multi-host, green DNS, no leaks.

Each test runs once per scheduler (``tests/green/conftest.py``), its scenario in a subprocess
patched for it, against a real PostgreSQL; the dead hosts are sockets the scenario makes on
127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import RunGreen
from tests.support import scenarios_connect
from tests.support.env import missing
from tests.support.postgres import ThrowawayPostgres

# Slow, and independent of the Python version: one Python's environments run it.
pytestmark = [pytest.mark.postgres, pytest.mark.once]

TIMEOUT = scenarios_connect.TIMEOUT
SLACK = scenarios_connect.SLACK
# The longest a heartbeat greenlet may wait beyond its interval, not counting the time the
# kernel ran other processes (StallMeter in scenarios_connect.py): a blocking resolver or
# connect stalls the hub for tens of milliseconds to seconds.
STALL = 0.02


@pytest.mark.parametrize("how", ["dsn", "kwargs", "env"])
@pytest.mark.parametrize("kind", ["never_accepts", "silent"])
def test_dead_host_first_costs_one_connect_timeout(
    scheduler: str, run_green: RunGreen, kind: str, how: str
) -> None:
    out = run_green(
        scheduler, scenarios_connect.dead_first, kind=kind, connect_timeout=TIMEOUT, how=how
    )
    assert out["port"] == out["server_port"], out
    assert TIMEOUT - 0.05 <= out["elapsed"] < TIMEOUT + SLACK, out
    assert out["ticks"] > 50, out  # the heartbeat ran throughout
    assert out["max_stall"] < STALL, out


def test_all_hosts_dead_one_error_naming_each(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_connect.all_dead, connect_timeout=TIMEOUT)
    never, silent, closed = out["ports"]
    kind, message = out["error"]
    assert kind == "OperationalError"
    lines = [line for line in message.splitlines() if line.startswith("connection to server")]
    assert lines == [
        f'connection to server at "127.0.0.1", port {never} failed: timeout expired',
        f'connection to server at "127.0.0.1", port {silent} failed: timeout expired',
        f'connection to server at "127.0.0.1", port {closed} failed: Connection refused',
    ], message
    # two hosts time out, the closed port fails at once: at most N x connect_timeout
    assert 2 * TIMEOUT - 0.05 <= out["elapsed"] < 3 * TIMEOUT + SLACK, out


@pytest.mark.parametrize("how", ["block", "psycogreen_timeout"])
def test_psycogreen_deadline_bounds_connect(scheduler: str, run_green: RunGreen, how: str) -> None:
    out = run_green(scheduler, scenarios_connect.deadline, seconds=1.0, how=how)
    kind, message = out["error"]
    assert kind == "OperationalError"
    assert message.startswith(
        f'connection to server at "127.0.0.1", port {out["port"]} failed: timeout expired'
    ), message
    assert 0.95 <= out["elapsed"] < 1.0 + SLACK, out


def test_slow_resolver_does_not_stop_other_greenlets(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_connect.slow_dns, delay=0.5)
    assert out["elapsed"] >= 0.5, out
    assert out["ticks"] > 30, out
    assert out["max_stall"] < STALL, out
    # libpq got the name (TLS verify-full and .pgpass use it) and the resolved address
    assert out["host"] == out["dsn_host"] == "db.psycogreen.test", out
    assert out["hostaddr"] == "127.0.0.1", out
    assert out["after_unknown"] == "db.psycogreen.test", out
    kind, message, elapsed = out["unknown"]
    assert kind == "OperationalError"
    assert message.startswith(
        'could not translate host name "nosuch.psycogreen.test" to address'
    ), message
    assert elapsed < 1.5, out


def test_a_blocking_resolver_would_be_seen(scheduler: str, run_green: RunGreen) -> None:
    """The negative control: the same resolver sleeping the whole process stalls the hub."""
    out = run_green(scheduler, scenarios_connect.slow_dns, delay=0.5, blocking=True)
    assert out["max_stall"] >= 0.2, out


def test_hosts_file_names_skip_the_schedulers_resolver(scheduler: str, run_green: RunGreen) -> None:
    """localhost (in /etc/hosts, read first) does not go through the scheduler's resolver: a
    round trip through its thread pool costs as much as a local connect."""
    out = run_green(scheduler, scenarios_connect.hosts_file_name)
    if not out["local"]:
        missing("this machine does not answer localhost from /etc/hosts (nsswitch: files first)")
    assert out["localhost"] == ["localhost", "127.0.0.1"], out
    assert out["LocalHost"] == ["LocalHost", "127.0.0.1"], out
    assert out["db.psycogreen.test"] == ["db.psycogreen.test", "127.0.0.1"], out
    assert out["asked"] == ["db.psycogreen.test"], out


def test_connection_factory_and_unix_sockets(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_connect.factory_and_sockets)
    assert out["factory"] is True
    if out["socket_dir"]:
        assert out["socket_host"] is True
        assert out["socket_error"].startswith(
            'connection to server on socket "/nonexistent-psycogreen-dir/.s.PGSQL.'
        ), out


def test_service_file(scheduler: str, run_green: RunGreen, tmp_path) -> None:
    out = run_green(
        scheduler,
        scenarios_connect.service_file,
        path=str(tmp_path / "pg_service.conf"),
        connect_timeout=TIMEOUT,
    )
    assert out["port"] == out["server_port"], out
    assert TIMEOUT - 0.05 <= out["elapsed"] < TIMEOUT + SLACK, out
    assert out["whole"] == "OperationalError", out
    assert TIMEOUT - 0.05 <= out["whole_elapsed"] < TIMEOUT + SLACK, out


def test_bad_input_gives_psycopg2s_own_errors(
    scheduler: str, run_green: RunGreen, dsn: str
) -> None:
    out = run_green(scheduler, scenarios_connect.bad_input)
    expected = {}
    for name, target in {
        "malformed": "host=127.0.0.1 = port",
        "bad_option": dsn + " sslmode=bogus",
        "bad_timeout": dsn + " connect_timeout=soon",
        "mismatch": "host=127.0.0.1,127.0.0.1 port=1,2,3",
    }.items():
        try:
            psycopg2.connect(target)  # blocking psycopg2, unpatched: the reference
        except psycopg2.Error as exc:
            expected[name] = [type(exc).__name__, str(exc)]
    # libpq checks connect_timeout in its blocking connect only; psycogreen, which enforces it
    # in green mode, says what is wrong in its own words.
    assert expected["bad_timeout"][0] == "OperationalError", expected
    expected["bad_timeout"] = [
        "OperationalError",
        'connect_timeout must be a whole number of seconds, not "soon"\n',
    ]
    assert out == expected, (out, expected)


@pytest.mark.slow
def test_no_fd_leak_after_1000_failed_connects(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_connect.fd_leak, n=1000, timeouts=3)
    assert out["failed"] == 1000, out
    assert all("timeout expired" in t for t in out["timeouts"]), out
    assert out["after"] == out["before"], out


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A throwaway server that asks ``pgpass_user`` for a password (scram-sha-256) over TCP."""
    folder = Path(tempfile.mkdtemp(prefix="psycogreen-hba-"))
    folder.chmod(0o755)  # the server may run as another user
    hba = folder / "pg_hba.conf"
    hba.write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n",
        encoding="utf-8",
    )
    hba.chmod(0o644)
    server = ThrowawayPostgres(max_connections=20, settings={"hba_file": str(hba)})
    try:
        server.start()
    except Exception as exc:
        missing(f"no PostgreSQL server: {exc}")
    try:
        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE ROLE pgpass_user LOGIN PASSWORD 'pgpass-secret'")
        conn.close()
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_pgpass_matched_against_the_host_name(
    scheduler: str, run_green: RunGreen, password_server: str, tmp_path: Path
) -> None:
    """The name resolved by the scheduler's resolver is what libpq matches .pgpass against."""
    out = run_green(
        scheduler, scenarios_connect.pgpass, server=password_server, path=str(tmp_path / "pgpass")
    )
    assert out["by_name"] == "pgpass_user", out
    # an entry for the address does not match: libpq looks the host name up, as without psycogreen
    assert "password" in out["by_address_entry"], out


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[str, str]]:
    """A throwaway server with TLS, its certificate issued to db.psycogreen.test only."""
    if shutil.which("openssl") is None:
        missing("no openssl command to make the test certificates")
    folder = Path(tempfile.mkdtemp(prefix="psycogreen-tls-"))
    folder.chmod(0o755)  # the server may run as another user
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=psycogreen test CA",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=db.psycogreen.test",
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:db.psycogreen.test\n", encoding="utf-8")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=folder,
    )
    key = folder / "server.key"
    key.chmod(0o600)  # the server refuses a key others can read
    if os.geteuid() == 0:  # the server runs as postgres (see ThrowawayPostgres)
        for user in ("postgres", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                continue
            shutil.chown(key, user=user)
            break
    settings = {
        "ssl": "on",
        "ssl_cert_file": str(folder / "server.crt"),
        "ssl_key_file": str(key),
    }
    server = ThrowawayPostgres(max_connections=20, settings=settings)
    try:
        server.start()
    except Exception as exc:
        missing(f"no PostgreSQL server: {exc}")
    try:
        yield server.dsn, str(folder / "ca.crt")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_verify_full_checks_the_name_not_the_address(
    scheduler: str, run_green: RunGreen, tls_server: tuple[str, str]
) -> None:
    server, ca = tls_server
    out = run_green(scheduler, scenarios_connect.verify_full, server=server, ca=ca)
    assert out["ssl_in_use"] is True, out
    assert out["host"] == "db.psycogreen.test", out
    # the same address under another name: libpq checks the certificate against that name
    assert 'does not match host name "other.psycogreen.test"' in out["other_name"], out


def test_target_session_attrs(scheduler: str, run_green: RunGreen) -> None:
    out = run_green(scheduler, scenarios_connect.session_attrs)
    closed, port = out["ports"]
    assert out["read-write"] is out["primary"] is out["prefer-standby"] is out["any"] is True, out
    assert out["standby"].splitlines() == [
        f'connection to server at "127.0.0.1", port {closed} failed: Connection refused',
        "\tIs the server running on that host and accepting TCP/IP connections?",
        f'connection to server at "127.0.0.1", port {port} failed: server is not in hot standby mode',
    ], out
    assert out["read-only"].splitlines()[-1] == (
        f'connection to server at "127.0.0.1", port {port} failed: session is not read-only'
    ), out
