# SPDX-License-Identifier: BSD-3-Clause
# The report's tables print multiplication signs and en dashes.
# ruff: noqa: RUF001
"""The benchmarks page, its charts and docs/benchmarks.json agree, and come from one code path.

``hatch run bench:run --docs`` writes all three from the results document; here the committed
page and charts must be what ``bench:charts`` would write from the committed document, and a
synthetic run must go through the summary, the report, its reading back and the charts.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """``bench/run.py`` as a module (it puts bench/ at the end of sys.path for its own modules)."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def committed(bench: ModuleType) -> dict[str, Any]:
    return dict(json.loads(bench.DATA.read_text(encoding="utf-8")))


def test_the_page_is_written_from_the_document(
    bench: ModuleType, committed: dict[str, Any]
) -> None:
    page = bench.PAGE.read_text(encoding="utf-8")
    notes = (ROOT / "bench" / "NOTES.md").read_text(encoding="utf-8")
    body = f"{bench.REPORT_OPEN}\n\n{bench.report(committed)}\n{bench.REPORT_CLOSE}\n"
    assert page == bench.DOCS_HEAD + notes + "\n## Latest report\n\n" + body


def test_the_charts_are_drawn_from_the_document(
    bench: ModuleType, committed: dict[str, Any]
) -> None:
    drawn = bench.charts.render(committed, bench.LABELS)
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in bench.IMAGES.glob("*.svg")}
    assert set(drawn) == set(on_disk)
    for name, svg in drawn.items():
        assert svg == on_disk[name], f"{name}: run `hatch run bench:charts`"
    # The headline comparisons, each above the tables it summarises.
    assert {"throughput.svg", "query-cpu.svg", "batch-500.svg", "hub-gaps.svg"} <= set(drawn)
    page = bench.PAGE.read_text(encoding="utf-8")
    for name in drawn:
        title = bench.TITLES[bench.charts.CHARTS[name][1]]
        assert page.index(f"### {title}") < page.index(f"(img/bench/{name})")


def synthetic_run(bench: ModuleType) -> dict[str, Any]:
    """Rounds for every section of bench/variants.py, with figures of each column's form."""
    rng = random.Random(15)
    raw: dict[str, Any] = {"started": "2030-01-02 03:04"}
    for sec in bench.SECTIONS:
        cases = []
        for case in sec.cases:
            runs = {}
            for variant in sec.variants:
                rounds = []
                for _ in range(sec.rounds):
                    rounds.append({key: rng.uniform(0.5, 5000) for key, _, _ in sec.columns})
                runs[variant] = rounds
            runs[sec.variants[-1]][0] = {"error": "exit 1: a failure, kept in the report"}
            cases.append({"case": case, "runs": runs})
        raw[sec.key] = {"params": sec.full, "rounds": sec.rounds, "cases": cases}
    return raw


def test_a_report_reads_back_as_it_was(bench: ModuleType) -> None:
    info = {"CPU": "a CPU", "cores": "2", "load average at start": "0.10 0.20 0.30"}
    doc = bench.document(synthetic_run(bench), info, quick=False, elapsed=612.0)
    text = bench.report(doc)
    again = bench.import_report(text, note="read back")
    assert bench.report(again) == text
    # Every table row came back: same sections, cases and variants.
    for key, section in doc["sections"].items():
        assert [c["case"] for c in again["sections"][key]["cases"]] == [
            c["case"] for c in section["cases"]
        ]
        for case, back in zip(section["cases"], again["sections"][key]["cases"], strict=True):
            assert set(back["variants"]) == set(case["variants"])


def test_every_chart_is_svg_with_text(bench: ModuleType) -> None:
    doc = bench.document(synthetic_run(bench), {"cores": "2"}, quick=True, elapsed=60.0)
    drawn = bench.charts.render(doc, bench.LABELS)
    assert set(drawn) == {"throughput.svg", "query-cpu.svg", "batch-500.svg", "hub-gaps.svg"}
    for name, svg in drawn.items():
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg", name
        texts = [t.text for t in root.iter(f"{SVG}text") if t.text]
        assert len(texts) > 10, name  # title, axis, labels, figures: text, not paths
        assert any("psycogreen-gevent" in t for t in texts), name


def test_the_standalone_sections_summarise_and_chart(bench: ModuleType) -> None:
    standalone = bench.standalone
    seconds = [0.004, 0.006, 0.005]
    interrupt = {
        sched: {
            case: {"settle": seconds, "gap": seconds, "raised": seconds}
            for case in standalone.CASE_NAMES
        }
        for sched in standalone.SCHEDULERS
    }
    rounds = [
        {d: {"wall": 1.0 + i / 10, "cpu": 0.5, "gap_ms": 3.0 + i} for d in ("to", "from")}
        for i in range(3)
    ]
    copy = {
        f"{sched} {fmt}": {"blocking": rounds, "green": rounds[::-1], "bytes": 10}
        for fmt in ("text", "binary")
        for sched in standalone.SCHEDULERS
    }
    raw = {
        "started": "2030-01-02 03:04",
        "interrupt": {"params": {"runs": 3}, "raw": interrupt},
        "copy": {"params": {"rows": 1000, "rounds": 3}, "raw": copy},
    }
    doc = bench.document(raw, {"cores": "2"}, quick=True, elapsed=60.0)
    text = bench.report(doc)
    assert "| gevent | `gevent.Timeout` | 5.0 / 6.0 | 5.0 / 6.0 | 5.0 / 6.0 |" in text
    assert "| binary | COPY FROM | eventlet | 1.100 | 1.100 | 1.00× [0.83–1.20] | 5 |" in text
    assert set(bench.charts.render(doc, bench.LABELS)) == {"interrupt.svg", "copy.svg"}
    merged = bench.merge(
        bench.import_report(
            bench.report(
                bench.document(synthetic_run(bench), {"cores": "2"}, quick=False, elapsed=60.0)
            ),
            note="old",
        ),
        doc,
    )
    assert list(merged["sections"]) == bench.ALL_KEYS
    assert len(merged["runs"]) == 2
    assert "- run 2, of 2030-01-02 03:04 UTC, quick (smoke) run, 1.0 min: sections 9, 10." in (
        bench.report(merged)
    )
