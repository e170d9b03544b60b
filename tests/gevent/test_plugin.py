# SPDX-License-Identifier: BSD-3-Clause
"""``gevent.monkey.patch_all()`` alone makes psycopg2 green, through psycogreen-gevent's plugin.

Each case runs a small program in its own process: the plugin fires inside ``patch_all()``, which
can happen once per process. The entry point exists only when psycogreen-gevent is installed
(the hatch environments install it), so these tests need an installed distribution.
"""

from __future__ import annotations

import importlib.metadata
import textwrap
from typing import Any

import pytest

from tests.support.child import run_json
from tests.support.env import missing, require

GROUP = "gevent.plugins.monkey.did_patch_builtins"


@pytest.fixture(scope="module", autouse=True)
def _plugin_installed() -> None:
    require("gevent")
    require("psycogreen.gevent")
    names = [ep.value for ep in importlib.metadata.entry_points(group=GROUP)]
    if "psycogreen.gevent._plugin:did_patch_builtins" not in names:
        missing(f"psycogreen-gevent is not installed (no entry point in {GROUP}: {names})")


# The program's prologue: runs `before` (code executed before patch_all), then patch_all()
# with every warning recorded, then `after`; prints a JSON object as its last line.
PROLOGUE = """
import json, sys, time, warnings
DSN = sys.argv[1]
out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
{before}
    from gevent import monkey
    monkey.patch_all()
    import gevent
    import psycogreen.core as core
    try:
        out["scheduler"] = core.current_scheduler()
    except core.PsycogreenError as exc:
        out["scheduler"] = type(exc).__name__
{after}
out["warnings"] = [
    [w.category.__name__, str(w.message)] for w in caught
    if not issubclass(w.category, DeprecationWarning)
]
print(json.dumps(out))
"""

PSYCOPG2_CONCURRENT = """
import psycopg2
def q():
    c = psycopg2.connect(DSN)
    c.cursor().execute("SELECT pg_sleep(0.2)")
    c.close()
t = time.perf_counter()
gevent.joinall([gevent.spawn(q) for _ in range(5)], raise_error=True)
out["elapsed"] = time.perf_counter() - t
"""

PSYCOPG3_CONCURRENT = """
import psycopg
def q3():
    with psycopg.connect(DSN) as c:
        c.execute("SELECT pg_sleep(0.2)")
t = time.perf_counter()
gevent.joinall([gevent.spawn(q3) for _ in range(4)], raise_error=True)
out["elapsed3"] = time.perf_counter() - t
"""


def run(dsn: str, before: str = "", after: str = "", **env: str) -> dict[str, Any]:
    code = PROLOGUE.replace(
        "{before}", textwrap.indent(textwrap.dedent(before).strip() or "pass", "    ")
    ).replace("{after}", textwrap.indent(textwrap.dedent(after).strip() or "pass", "    "))
    return run_json(["-c", code, dsn], env=env, drop=("PSYCOGREEN_GEVENT", "PSYCOPG_"))


def test_patch_all_alone_greens_psycopg2(dsn: str) -> None:
    out = run(dsn, after=PSYCOPG2_CONCURRENT)
    assert out["scheduler"] == "gevent"
    assert out["warnings"] == []
    # 5 x pg_sleep(0.2) overlap on the hub: serial would take 1 s.
    assert out["elapsed"] < 0.7, out


def test_explicit_patch_after_plugin_is_a_no_op(dsn: str) -> None:
    out = run(
        dsn,
        after="""
        import psycopg2.extensions, psycogreen.gevent
        first = psycopg2.extensions.get_wait_callback()
        psycogreen.gevent.patch_psycopg()
        out["same"] = psycopg2.extensions.get_wait_callback() is first
    """,
    )
    assert out["scheduler"] == "gevent"
    assert out["same"] is True
    assert out["warnings"] == []


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_env_var_turns_autopatch_off(dsn: str, value: str) -> None:
    out = run(
        dsn,
        after="""
        import psycopg2.extensions
        out["callback"] = repr(psycopg2.extensions.get_wait_callback())
    """,
        PSYCOGREEN_GEVENT_AUTOPATCH=value,
    )
    assert out["scheduler"] is None
    assert out["callback"] == "None"
    assert out["warnings"] == []


def test_foreign_callback_is_kept_with_a_warning(dsn: str) -> None:
    out = run(
        dsn,
        before="""
        import psycopg2.extensions, psycopg2.extras
        psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    """,
        after="""
        out["kept"] = psycopg2.extensions.get_wait_callback() is psycopg2.extras.wait_select
        out["patched_socket"] = monkey.is_module_patched("socket")
    """,
    )
    assert out["kept"] is True
    assert out["scheduler"] is None
    assert out["patched_socket"] is True  # patch_all() completed
    [(category, message)] = out["warnings"]
    assert category == "RuntimeWarning"
    assert "psycopg2.extras.wait_select" in message
    assert "PSYCOGREEN_GEVENT_AUTOPATCH=0" in message


def test_psycopg3_imported_before_patch_all_warns_once(dsn: str) -> None:
    require("psycopg")
    out = run(
        dsn,
        before="import psycopg",
        after=textwrap.dedent("""
        import psycogreen.gevent
        psycogreen.gevent.patch_psycopg()   # a second chance to warn: it must not
        core.patch("gevent")
        out["reason"] = core.psycopg_blocking_reason("gevent")
    """)
        + PSYCOPG3_CONCURRENT,
    )
    assert out["scheduler"] == "gevent"
    [(category, message)] = out["warnings"]
    assert category == "PsycopgBlockingWarning"
    assert "wait_c" in message
    assert "only after gevent.monkey.patch_all()" in message
    assert "wait_c" in out["reason"]
    # The warning is true: psycopg 3's queries ran one after the other (4 x 0.2 s).
    assert out["elapsed3"] >= 0.75, out


def test_psycopg3_imported_after_patch_all_is_quiet(dsn: str) -> None:
    require("psycopg")
    out = run(
        dsn,
        after=textwrap.dedent("""
        import psycogreen.gevent
        psycogreen.gevent.patch_psycopg()
        out["reason"] = core.psycopg_blocking_reason("gevent")
    """)
        + PSYCOPG3_CONCURRENT,
    )
    assert out["warnings"] == []
    assert out["reason"] is None
    assert out["elapsed3"] < 0.6, out  # psycopg 3 chose a cooperative wait: the 4 queries overlap


def test_psycopg3_stale_selector_is_detected(dsn: str) -> None:
    # PSYCOPG_WAIT_FUNC picks a select()-based wait, but psycopg.waiting was imported before
    # patch_all(), so connecting still waits on the unpatched DefaultSelector it bound then.
    require("psycopg")
    out = run(
        dsn,
        before="import psycopg",
        after="""
        out["reason"] = core.psycopg_blocking_reason("gevent")
    """,
        PSYCOPG_WAIT_FUNC="wait_poll",
    )
    [(category, message)] = out["warnings"]
    assert category == "PsycopgBlockingWarning"
    assert "bound before gevent patched the selectors module" in message
    assert out["reason"] in message


def test_plugin_warns_about_psycopg3_without_psycopg2(dsn: str) -> None:
    require("psycopg")
    out = run(
        dsn,
        before="""
        import psycopg
        sys.modules["psycopg2"] = None   # psycopg2 not installed
    """,
    )
    assert out["scheduler"] == "PsycopgNotFoundError"
    [(category, _)] = out["warnings"]
    assert category == "PsycopgBlockingWarning"


def test_plugin_failure_does_not_abort_patch_all(dsn: str) -> None:
    # A psycopg2 that fails in a way psycogreen does not foresee (a stand-in module: no real
    # installation breaks like this on demand): patch_all() still completes, with a warning.
    out = run(
        dsn,
        before="""
        import types
        broken = types.ModuleType("psycopg2")
        broken.__spec__ = None   # importlib.util.find_spec() raises ValueError on it
        sys.modules["psycopg2"] = broken
        """,
        after="""
        out["patched_socket"] = monkey.is_module_patched("socket")
        """,
    )
    assert out["patched_socket"] is True
    [(category, message)] = out["warnings"]
    assert category == "RuntimeWarning"
    assert "did not patch psycopg2" in message
    assert "ValueError" in message
