# SPDX-License-Identifier: BSD-3-Clause
"""psycogreen-uwsgi outside uWSGI, and the mode checks on option spellings a server test does
not start (ini values, repeated options)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.env import require

psycopg2 = pytest.importorskip("psycopg2")
extensions = pytest.importorskip("psycopg2.extensions")


@pytest.fixture
def backend() -> Any:
    return require("psycogreen.uwsgi")


@pytest.fixture
def diagnose() -> Any:
    return require("psycogreen.uwsgi._checks").diagnose


def test_patch_outside_uwsgi_is_refused(backend: Any) -> None:
    before = extensions.get_wait_callback()
    with pytest.raises(backend.UwsgiModeError, match="works only inside a uWSGI server"):
        backend.patch_psycopg()
    assert extensions.get_wait_callback() is before


@pytest.mark.postgres
def test_first_wait_outside_uwsgi_is_refused(backend: Any, dsn: str) -> None:
    """The callback installed directly checks the mode at its first wait."""
    conn = psycopg2.connect(dsn, async_=True)
    try:
        with pytest.raises(backend.UwsgiModeError, match="works only inside a uWSGI server"):
            backend.uwsgi_wait_callback(conn)
    finally:
        conn.close()


def test_error_is_a_psycogreen_error(backend: Any) -> None:
    core = require("psycogreen.core")
    assert issubclass(backend.UwsgiModeError, core.PsycogreenError)
    assert issubclass(backend.UwsgiModeError, RuntimeError)


@pytest.mark.parametrize(
    "opt",
    [
        {"async": b"20", "greenlet": True},  # command line
        {"async": b"20", "greenlet": b"true"},  # ini file
        {"async": b"20", "greenlet": b"1"},  # UWSGI_GREENLET=1
        {"async": [b"4", b"20"], "greenlet": True},  # repeated: the last wins
        {"async": "20", "greenlet": "true"},  # str values
    ],
)
def test_supported_spellings(diagnose: Any, opt: dict[str, Any]) -> None:
    assert diagnose(None, opt) is None
    assert diagnose(b"async", opt) is None  # --loop async is the default loop


@pytest.mark.parametrize(
    ("loop", "opt", "expected"),
    [
        (None, {"async": b"20", "greenlet": b"false"}, "without the greenlet suspend engine"),
        (None, {"async": b"20", "greenlet": [True, b"off"]}, "without the greenlet suspend engine"),
        (None, {"async": b"20", "stackless": True}, "--stackless is not supported"),
        (None, {"async": b"0", "greenlet": True}, "sync mode"),
        (
            None,
            {"greenlet": True, "ugreen": True, "async": b"20"},
            "Replace --ugreen with --greenlet",
        ),
        (b"asyncio", {"async": b"20", "greenlet": True}, "'asyncio' loop engine"),
        (b"gevent", {"gevent": b"20"}, "psycogreen-gevent"),
    ],
)
def test_refused_spellings(diagnose: Any, loop: Any, opt: dict[str, Any], expected: str) -> None:
    message = diagnose(loop, opt)
    assert message is not None
    assert expected in message


def test_copy_is_refused_with_the_reason(backend: Any) -> None:
    """COPY under uWSGI is refused, saying why (core reads it from the backend's record)."""
    reason = backend.BACKEND.copy_refusal
    assert reason is not None
    assert "uWSGI's async API" in reason
    assert backend.BACKEND.cancel_waits is False
    assert backend.BACKEND.spawn is None
