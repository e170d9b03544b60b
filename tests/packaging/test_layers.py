# SPDX-License-Identifier: BSD-3-Clause
"""Core's modules form layers: every import points down, and none forms a cycle.

Read from the source (``ast``), module-level and function-local imports alike, so a lazy import
that climbs back up fails here too. The layers, lowest first:

- leaf: types, errors, psycopg2's constants, the in-flight bookkeeping, the libpq binding, the
  blocking waits, the event records and their delivery;
- loop: deadlines, the backend record, cancel, the poll loop, the busy error;
- registry: the registered backends, detection, the scheduler-free backend;
- operations: COPY, the guard, connect, large objects;
- top: patching, the public modules (``__init__``, ``backend``, the pool, ...).

A module may import its own layer's modules (the graph must stay acyclic) and lower layers'.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "packages/core/src/psycogreen/core"
PACKAGE = "psycogreen.core"

LAYERS: dict[str, set[str]] = {
    "leaf": {
        "__about__",
        "_types",
        "_errors",
        "_compat",
        "_inflight",
        "_hostsfile",
        "_libpq",
        "_waits",
        "_psycopg3",
        "_pollhook",
        "_dsn",
        "_bytesfill",
        "_records",
        "_emit",
        "_conninfo",
        "_observe",
        "_eventlog",
    },
    "loop": {"_timeout", "_backend", "_cancel", "_poll", "_busy"},
    "registry": {"_registry", "_detect", "_blocking"},
    "operations": {
        "_copy",
        "_copy_loop",
        "_copy_errors",
        "_copy_execute",
        "_guard",
        "_connect",
        "_connect_hosts",
        "_lobject",
        "_lobject_args",
        "_lobject_io",
    },
    "top": {"_patch", "__init__", "backend", "events"},
}
ORDER = list(LAYERS)


def _modules() -> dict[str, Path]:
    """Module name (relative to core, dotted) -> file, for every module of core."""
    found = {}
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(CORE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _layer(module: str) -> str:
    top = module.split(".", 1)[0]
    for name, members in LAYERS.items():
        if top in members:
            return name
    if not top.startswith("_"):
        return "top"  # public modules and subpackages (the pool, the Django backend) are API
    pytest.fail(f"core module {module!r} has no layer: add it to LAYERS in {__file__}")
    raise AssertionError  # unreachable


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The core modules that ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.rsplit(".", 1)[0] if "." in module else ""
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(filter(None, [*base, node.module or ""]))
                names = [f"{PACKAGE}.{stem}" if stem else PACKAGE]
            else:
                names = [node.module or ""]
            # ``from package import module`` imports that module (the package is only its
            # parent); ``from module import name`` imports the module.
            base = names[0][len(PACKAGE) + 1 :]
            subs = [f"{names[0]}.{a.name}" for a in node.names]
            if any(sub[len(PACKAGE) + 1 :] in known for sub in subs) and base != "":
                names = subs
            else:
                names += subs
        for name in names:
            if not name.startswith(PACKAGE + "."):
                continue
            target = name[len(PACKAGE) + 1 :]
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def test_every_core_import_points_down() -> None:
    wrong = []
    for module, targets in sorted(_graph().items()):
        here = ORDER.index(_layer(module))
        for target in sorted(targets):
            there = ORDER.index(_layer(target))
            if there > here:
                wrong.append(f"{module} ({ORDER[here]}) imports {target} ({ORDER[there]})")
    assert not wrong, "imports that climb a layer:\n" + "\n".join(wrong)


def test_core_imports_form_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_layer_test_sees_the_imports() -> None:
    # The poll loop imports cancel and the backend record: a reader that misses them would
    # pass every check above for nothing.
    graph = _graph()
    assert {"_cancel", "_backend", "_timeout"} <= graph["_poll"]
    assert "_connect" in graph["_patch"]  # a function-local import counts too


def test_no_backend_module_imports_core_privately() -> None:
    backends = CORE.parents[3]
    private = []
    for path in backends.glob("*/src/psycogreen/*/**/*.py"):
        if "core" in path.relative_to(backends).parts[:1]:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "._"):
                private.append(f"{path.relative_to(backends)}: from {node.module}")
    assert not private, "backends use core's public API only:\n" + "\n".join(private)
