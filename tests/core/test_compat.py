# SPDX-License-Identifier: BSD-3-Clause
"""Run-time checks of psycopg2: errors that name the cause and the fix."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from psycogreen.core import (
    PsycopgIncompatibleError,
    PsycopgNotFoundError,
    check_psycopg,
    detect_scheduler,
)


@pytest.fixture
def fresh_check() -> Iterator[None]:
    check_psycopg.cache_clear()
    yield
    check_psycopg.cache_clear()


def test_psycopg2_missing(monkeypatch: pytest.MonkeyPatch, fresh_check: None) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(PsycopgNotFoundError, match="pip install psycopg2-binary") as info:
        check_psycopg()
    assert isinstance(info.value, ImportError)


def test_psycopg2_without_wait_callbacks(
    monkeypatch: pytest.MonkeyPatch, fresh_check: None
) -> None:
    old = types.ModuleType("psycopg2")
    old.__version__ = "2.0.14"  # type: ignore[attr-defined]
    old.__path__ = []  # type: ignore[attr-defined]
    ext = types.ModuleType("psycopg2.extensions")
    old.extensions = ext  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psycopg2", old)
    monkeypatch.setitem(sys.modules, "psycopg2.extensions", ext)
    with pytest.raises(
        PsycopgIncompatibleError, match=r"psycopg2 2\.0\.14 has no .*set_wait_callback.*upgrade"
    ):
        check_psycopg()


def test_psycopg2_with_other_constants(monkeypatch: pytest.MonkeyPatch, fresh_check: None) -> None:
    import psycopg2.extensions

    monkeypatch.setattr(psycopg2.extensions, "POLL_WRITE", 9)
    with pytest.raises(PsycopgIncompatibleError, match="POLL_WRITE = 9"):
        check_psycopg()


def test_real_psycopg2_passes(fresh_check: None) -> None:
    import psycopg2.extensions

    assert check_psycopg() is psycopg2.extensions


def test_detect_looks_only_at_loaded_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_scheduler() is None  # this process patched nothing
    for name in ("gevent.monkey", "eventlet.patcher", "uwsgi"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    fake = types.ModuleType("gevent.monkey")
    fake.is_module_patched = lambda name: name == "socket"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gevent.monkey", fake)
    assert detect_scheduler() == "gevent"
    fake.is_module_patched = lambda _name: False  # type: ignore[attr-defined]
    assert detect_scheduler() is None
    patcher = types.ModuleType("eventlet.patcher")
    patcher.is_monkey_patched = lambda name: name == "socket"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "eventlet.patcher", patcher)
    assert detect_scheduler() == "eventlet"
