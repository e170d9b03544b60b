# SPDX-License-Identifier: BSD-3-Clause
"""Every public name of 1.0 is still there: an application or a backend written for 1.0 runs."""

from __future__ import annotations

import importlib

import pytest

from tests.support.env import require

# psycogreen.core's public names in 1.0.0 (its __all__ then), and what each backend exported.
CORE_1_0 = {
    "SCHEDULERS", "ConnectionBusyError", "CopyCursorMixin", "CopyUnavailableError",
    "GuardedConnection", "GuardedCursor", "GuardedNamedCursor", "PatchConflictError",
    "PollingConnection", "PsycogreenError", "PsycopgBlockingWarning", "PsycopgIncompatibleError",
    "PsycopgNotFoundError", "SchedulerNotFoundError", "WaitCallback", "WaitFunc", "__version__",
    "check_psycopg", "connect", "copy_expert", "copy_from", "copy_to", "current_scheduler",
    "detect_scheduler", "get_backend", "get_timeout", "guarded_connection_class",
    "guarded_cursor_class", "is_patched", "make_wait_callback", "patch", "patch_psycopg",
    "psycopg_blocking_reason", "register_backend", "set_cancel_timeout", "set_timeout",
    "timeout", "unpatch", "wait_callback", "warn_if_psycopg_blocks",
}  # fmt: skip
# What a backend author uses, from psycogreen.core.backend (1.1).
BACKEND_API = {
    "Backend", "Event", "PollingConnection", "Task", "WaitCallback", "WaitFunc",
    "active_backend", "backends", "current_backend", "register_backend",
}  # fmt: skip
BACKENDS = {
    "gevent": {"patch_psycopg", "gevent_wait_callback", "__version__"},
    "eventlet": {"patch_psycopg", "eventlet_wait_callback", "__version__"},
    "uwsgi": {"patch_psycopg", "uwsgi_wait_callback", "UwsgiModeError", "__version__"},
}


def test_core_keeps_every_1_0_name() -> None:
    core = importlib.import_module("psycogreen.core")
    missing = sorted(name for name in CORE_1_0 if not hasattr(core, name))
    assert not missing, missing


def test_core_all_lists_what_an_application_uses() -> None:
    core = importlib.import_module("psycogreen.core")
    assert set(core.__all__) <= CORE_1_0
    # What only a backend author needs lives in psycogreen.core.backend.
    assert not {"make_wait_callback", "register_backend", "WaitFunc"} & set(core.__all__)


def test_the_backend_api() -> None:
    backend = importlib.import_module("psycogreen.core.backend")
    assert set(backend.__all__) >= BACKEND_API
    missing = sorted(name for name in BACKEND_API if not hasattr(backend, name))
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_keeps_its_1x_names(name: str) -> None:
    if name != "uwsgi":
        require(name)  # the scheduler itself
    module = importlib.import_module(f"psycogreen.{name}")
    missing = sorted(attr for attr in BACKENDS[name] if not hasattr(module, attr))
    assert not missing, missing
    assert isinstance(module.BACKEND, importlib.import_module("psycogreen.core.backend").Backend)
