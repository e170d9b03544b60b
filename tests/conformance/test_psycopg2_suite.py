# SPDX-License-Identifier: BSD-3-Clause
"""psycopg2's own test suite, plain and under ``patch_psycopg()``: a program sees the same psycopg2.

The suite of the installed psycopg2 (from its sdist, ``tests.support.psycopg2_suite``) runs
against a throwaway server three times, each in its own process: plain, then patched for gevent,
then for eventlet (``tests.support.conformance_run``). A test that passes plain must pass
patched, unless ``expected.toml`` lists it with the reason it cannot; a listed test that passes
patched fails the run too, so that the list stays true.

The server is set up for every group of the suite: logical replication (``wal_level=logical``;
the replication tests connect to it), prepared transactions (the two-phase tests) and
``hstore``. With ``PSYCOGREEN_TEST_DSN`` the suite runs against that server instead, without
its replication tests (psycopg2 skips them without ``PSYCOPG2_TEST_REPL_DSN``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomllib

from tests.support.env import missing, require

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).with_name("expected.toml")
MODES = ("gevent", "eventlet")
# One mode's whole run: about half a minute on a quiet 2-core machine.
RUN_TIMEOUT = 900
RETRIES = 2
SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "max_prepared_transactions": "10",
}
TEST_DB = "psycopg2_test"


@dataclass(frozen=True)
class Server:
    """Where psycopg2's suite connects (its ``testconfig.py`` environment variables)."""

    env: dict[str, str]


@pytest.fixture(scope="module")
def suite() -> str:
    from tests.support.psycopg2_suite import suite_dir

    require("psycopg2")
    try:
        return str(suite_dir())
    except Exception as exc:
        missing(f"psycopg2's test suite could not be fetched: {exc}")
        raise


def _prepare(admin_dsn: str) -> str:
    """Create a fresh test database (with hstore where the server has it); return its DSN."""
    import psycopg2
    import psycopg2.extensions

    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS {TEST_DB}")
        cur.execute(f"CREATE DATABASE {TEST_DB}")
    finally:
        conn.close()
    params = psycopg2.extensions.parse_dsn(admin_dsn)
    params["dbname"] = TEST_DB
    dsn = psycopg2.extensions.make_dsn(**params)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hstore'")
        if cur.fetchone():
            cur.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    finally:
        conn.close()
    return str(dsn)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    import psycopg2.extensions

    from tests.support.postgres import ThrowawayPostgres

    throwaway = None
    admin = os.environ.get("PSYCOGREEN_TEST_DSN")
    if admin is None:
        throwaway = ThrowawayPostgres(settings=SERVER_SETTINGS)
        try:
            admin = throwaway.start()
        except Exception as exc:
            missing(f"no PostgreSQL server: {exc}")
    try:
        dsn = _prepare(admin)
        params = psycopg2.extensions.parse_dsn(dsn)
        env = {"PSYCOPG2_TESTDB": params["dbname"]}
        for key, var in (
            ("host", "PSYCOPG2_TESTDB_HOST"),
            ("port", "PSYCOPG2_TESTDB_PORT"),
            ("user", "PSYCOPG2_TESTDB_USER"),
            ("password", "PSYCOPG2_TESTDB_PASSWORD"),
        ):
            if key in params:
                env[var] = params[key]
        if throwaway is not None:
            env["PSYCOPG2_TEST_REPL_DSN"] = dsn
        yield Server(env)
    finally:
        if throwaway is not None:
            throwaway.stop()


def _run(
    mode: str, suite: str, server: Server, tmp: Path, only: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Run the suite (or the tests ``only``) in ``mode``; return each test's record."""
    out = tmp / f"{mode}.jsonl"
    out.unlink(missing_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # Only the server's coordinates: no PSYCOPG2_TEST_GREEN (psycopg2 would skip what matters).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSYCOPG2_TEST")}
    env.update(server.env, PYTHONPATH=path, PYTHONWARNINGS="ignore::DeprecationWarning")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.conformance_run",
            mode,
            suite,
            str(out),
            *(only or []),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    records: dict[str, dict[str, Any]] = {}
    started = None
    done = False
    for line in out.read_text().splitlines() if out.exists() else []:
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        elif "done" in record:
            done = True
        else:
            records[record["id"]] = record
            started = None
    if proc.returncode != 0 or not done:
        pytest.fail(
            f"psycopg2's suite ({mode}) did not finish: exit {proc.returncode}, "
            f"in {started or 'no test'}\n--- stderr\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return records


def _expected() -> dict[str, dict[str, str]]:
    """mode -> {test id: reason} from ``expected.toml``."""
    data = tomllib.loads(EXPECTED.read_text())
    listed: dict[str, dict[str, str]] = {mode: {} for mode in MODES}
    for entry in data["difference"]:
        unknown = set(entry) - {"tests", "modes", "reason"}
        assert not unknown, f"unknown keys {unknown} in {entry}"
        assert entry["reason"].strip(), entry
        for mode in entry.get("modes", MODES):
            for test in entry["tests"]:
                assert test not in listed[mode], f"{test} listed twice for {mode}"
                listed[mode][test] = entry["reason"]
    return listed


@pytest.fixture(scope="module")
def plain(suite: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = _run("plain", suite, server, tmp_path_factory.mktemp("conformance"))
    passed = sum(r["outcome"] == "pass" for r in results.values())
    # A broken setup (no server, a suite that imports nothing) must not look like agreement.
    assert passed > 500, f"only {passed} of psycopg2's tests pass plain: {len(results)} ran"
    return results


@pytest.mark.parametrize("mode", MODES)
def test_patched_suite_passes_what_plain_passes(
    mode: str,
    suite: str,
    server: Server,
    plain: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require(mode)
    require(f"psycogreen.{mode}")
    listed = _expected()[mode]
    patched = _run(mode, suite, server, tmp_path_factory.mktemp(mode))

    assert set(patched) == set(plain), "plain and patched ran different tests"
    unknown = sorted(set(listed) - set(plain))
    assert not unknown, f"listed in expected.toml, not in this psycopg2's suite: {unknown}"

    def outcome(results: dict[str, Any], test: str) -> str:
        return str(results[test]["outcome"])

    differences = sorted(
        t for t in plain if outcome(plain, t) == "pass" and outcome(patched, t) != "pass"
    )
    # psycopg2's suite has timing-sensitive tests (sleeps, cancels, notifications), and the
    # machine may be busy: an unlisted difference counts if it fails again, alone, twice.
    unexpected = [t for t in differences if t not in listed]
    for attempt in range(RETRIES):
        if not unexpected:
            break
        again = _run(
            mode, suite, server, tmp_path_factory.mktemp(f"{mode}-retry{attempt}"), unexpected
        )
        for test in unexpected:
            patched[test] = again[test]
        unexpected = [t for t in unexpected if outcome(patched, t) != "pass"]
    # A listed test must pass plain and fail patched; one psycopg2 skips in both runs (the
    # replication tests without a replication server) cannot be checked here, and is allowed.
    stale = [
        t
        for t in listed
        if t not in differences and (outcome(plain, t), outcome(patched, t)) != ("skip", "skip")
    ]
    report = [
        f"{t}: {outcome(patched, t)}\n{patched[t]['detail'].strip()[-1500:]}" for t in unexpected
    ]
    assert not unexpected, (
        f"{len(unexpected)} of psycopg2's tests pass plain and fail under {mode}:\n\n"
        + "\n\n".join(report)
    )
    assert not stale, (
        f"listed in expected.toml for {mode}, but not a difference (remove them): "
        + ", ".join(f"{t} (plain {outcome(plain, t)}, {mode} {outcome(patched, t)})" for t in stale)
    )
