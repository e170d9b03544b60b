# SPDX-License-Identifier: BSD-3-Clause
"""Each distribution is self-contained and the namespace package stays a namespace."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def about_version(pkg: Path) -> str:
    about = pkg / "src" / "psycogreen" / pkg.name / "__about__.py"
    tree = ast.parse(about.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__":
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"no __version__ in {about}")


def test_distributions_found() -> None:
    assert {p.name for p in PACKAGES} >= {"core", "gevent", "eventlet"}


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_no_namespace_init(pkg: Path) -> None:
    """A psycogreen/__init__.py in any distribution would hide the other distributions."""
    assert not (pkg / "src" / "psycogreen" / "__init__.py").exists()
    assert (pkg / "src" / "psycogreen" / pkg.name / "__init__.py").exists()


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_self_contained(pkg: Path) -> None:
    assert (pkg / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert (pkg / "README.md").stat().st_size > 200
    assert (pkg / "src" / "psycogreen" / pkg.name / "py.typed").exists()
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"psycogreen-{pkg.name}"
    assert meta["tool"]["hatch"]["version"]["path"] == f"src/psycogreen/{pkg.name}/__about__.py"
    assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/psycogreen"]
    assert meta["project"]["requires-python"] == ">=3.10"
    deps = " ".join(meta["project"].get("dependencies", []))
    assert "psycopg2" not in deps, "psycopg2 or psycopg2-binary: the user chooses (extras only)"
    assert set(meta["project"]["optional-dependencies"]) >= {"binary", "psycopg2"}


@pytest.mark.parametrize("pkg", [p for p in PACKAGES if p.name != "core"], ids=lambda p: p.name)
def test_backend_core_specifier_admits_core(pkg: Path) -> None:
    from packaging.specifiers import SpecifierSet

    meta = tomllib.loads((pkg / "pyproject.toml").read_text())
    specs = [d for d in meta["project"]["dependencies"] if d.startswith("psycogreen-core")]
    assert len(specs) == 1
    spec = SpecifierSet(re.sub(r"^psycogreen-core\s*", "", specs[0]))
    assert about_version(ROOT / "packages" / "core") in spec


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_modules_start_with_future_annotations(pkg: Path) -> None:
    for path in (pkg / "src").rglob("*.py"):
        text = path.read_text()
        assert "from __future__ import annotations" in text, path
