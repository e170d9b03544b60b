# SPDX-License-Identifier: BSD-3-Clause
"""Every code example of the documentation runs, against a real PostgreSQL.

A ```python block in ``docs/**/*.md`` is run when the line before its fence is
``<!-- runnable -->``: as a script of its own, in a fresh interpreter (so it may monkey-patch),
with the working directory a temporary folder. It passes when it exits with status 0; put
``assert``s in it to check what it prints about. The string literal ``"dbname=app"`` (the DSN the
pages use) is replaced with the test server's DSN, whose parts are also in ``PGHOST``,
``PGPORT``, ``PGUSER`` and ``PGDATABASE``.

- ``<!-- runnable: continue -->``: the block continues the page's previous runnable block; the
  two (or more) run together, as one script.
- ``<!-- excerpt: path/in/the/repository -->``: the block shows lines of a file that other
  tests run (an example application, a config file); every non-blank line of the block must
  appear in that file, in the same order (indentation aside; ``...`` lines stand for omitted
  ones).
- ``<!-- not-runnable: why -->``: the block is deliberately not run (a fragment, a config for a
  server the tests do not start); the reason is required.

Every ```python block carries one of these marks: ``test_every_python_block_is_marked``
fails on a block that has none, so that no example can be left unrun by oversight.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PLACEHOLDER = re.compile(r"""(["'])dbname=app\1""")
MARK = re.compile(
    r"^\s*<!--\s*(runnable(?::\s*continue)?|not-runnable:\s*\S.*?|excerpt:\s*\S+)\s*-->\s*$"
)
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
PYTHON = {"python", "py", "python3"}


@dataclass
class Block:
    page: str  # relative to docs/
    line: int  # 1-based line of the opening fence
    language: str
    mark: str | None  # "runnable", "runnable: continue", "not-runnable: ...", or None
    code: str

    @property
    def runnable(self) -> bool:
        return self.mark is not None and self.mark.startswith("runnable")

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the mark on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        info = match["info"].strip().lstrip("{").strip()
        language = info.split()[0].lstrip(".").lower() if info else ""
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        found = MARK.match(previous)
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[j].removeprefix(indent))
            j += 1
        blocks.append(
            Block(
                page=path.relative_to(DOCS).as_posix(),
                line=i + 1,
                language=language,
                mark=re.sub(r"\s+", " ", found[1]) if found else None,
                code="\n".join(body) + "\n",
            )
        )
        i = j + 1
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if not p.relative_to(DOCS).parts[0].startswith("_"))


def python_blocks() -> list[Block]:
    return [b for page in pages() for b in parse(page) if b.language in PYTHON]


def scripts() -> list[tuple[str, Block, str]]:
    """(id, first block, script) for every runnable block, ``continue`` blocks folded in."""
    out: list[tuple[str, Block, str]] = []
    for block in python_blocks():
        if not block.runnable:
            continue
        if block.mark == "runnable: continue":
            if not out or out[-1][1].page != block.page:
                out.append((block.where, block, "raise SystemExit('nothing to continue')\n"))
                continue
            ident, first, code = out[-1]
            out[-1] = (ident, first, code + block.code)
            continue
        out.append((block.where, block, block.code))
    return out


def pg_environment(dsn: str) -> dict[str, str]:
    """``PGHOST``... from a ``key=value`` DSN, for examples that rely on libpq's defaults."""
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    env = {}
    for part in dsn.split():
        key, _, value = part.partition("=")
        if key in names:
            env[names[key]] = value
    return env


def test_every_python_block_is_marked() -> None:
    unmarked = [b.where for b in python_blocks() if b.mark is None]
    assert not unmarked, (
        "python blocks without <!-- runnable -->, <!-- excerpt: path --> or "
        f"<!-- not-runnable: why --> on the line before the fence: {', '.join(unmarked)} "
        "(see tests/docs/test_examples.py)"
    )


def excerpts() -> list[Block]:
    return [b for b in python_blocks() if b.mark is not None and b.mark.startswith("excerpt:")]


@pytest.mark.parametrize("block", excerpts(), ids=[b.where for b in excerpts()])
def test_excerpt_matches_its_file(block: Block) -> None:
    assert block.mark is not None
    source = ROOT / block.mark.partition(":")[2].strip()
    assert source.is_file(), f"{block.where}: {source} does not exist"
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    position = 0
    for wanted in (line.strip() for line in block.code.splitlines()):
        if not wanted or wanted in {"...", "# ..."}:
            continue
        try:
            position = lines.index(wanted, position) + 1
        except ValueError:
            pytest.fail(
                f"{block.where}: {wanted!r} is not in {source.relative_to(ROOT)} "
                "(after the block's previous lines)",
                pytrace=False,
            )


def test_the_pages_have_runnable_examples() -> None:
    # The parser must find the examples: a change of syntax that hid them all would pass the
    # other tests vacuously.
    assert len(scripts()) >= 5, [b.where for b in python_blocks()]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("block", "code"), [s[1:] for s in scripts()], ids=[s[0] for s in scripts()]
)
def test_example_runs(block: Block, code: str, dsn: str, tmp_path: Path) -> None:
    script = PLACEHOLDER.sub(lambda _: repr(dsn), code)
    # Not the page's bare name: the script's folder comes first on sys.path, and "copy.py"
    # would shadow the standard library's copy module.
    path = tmp_path / f"docs_example_{Path(block.page).stem}.py"
    path.write_text(script, encoding="utf-8")
    env = {**os.environ, **pg_environment(dsn)}
    if path_entries := os.environ.get("PYTHONPATH"):
        # The script runs in tmp_path: relative entries must not change meaning.
        absolute = [str(Path(p).resolve()) for p in path_entries.split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(absolute)
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the example at {block.where} exited with status {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}",
            pytrace=False,
        )


def _all(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


@pytest.mark.parametrize("backend", ["core", "gevent", "eventlet", "uwsgi"])
def test_api_reference_lists_every_public_name(backend: str) -> None:
    exported = set(
        _all(ROOT / "packages" / backend / "src" / "psycogreen" / backend / "__init__.py")
    )
    exported.discard("__version__")
    assert exported, f"no __all__ found for psycogreen.{backend}"
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(rf"^::: psycogreen\.{backend}\.(\w+)", api, re.MULTILINE))
    section = re.search(rf"^::: psycogreen\.{backend}\n(?:    .*\n)*", api, re.MULTILINE)
    if section and (members := re.search(r"members: \[([^\]]*)\]", section[0])):
        listed |= {m.strip() for m in members[1].split(",")}
    missing = sorted(exported - listed)
    assert not missing, f"docs/api.md does not document psycogreen.{backend}: {', '.join(missing)}"
