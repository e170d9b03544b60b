# SPDX-License-Identifier: BSD-3-Clause
# The charts print multiplication signs, en dashes and µs.
# ruff: noqa: RUF001
"""SVG charts of a benchmark report, written without any plotting library.

Two kinds: horizontal bars (one row per variant or case, one bar per series, the median with a
line from min to max across the rounds) and lines (a figure by the number of clients). Text is
SVG text, in the system's sans-serif font; the background is white, so a chart reads the same
in the site's light and dark schemes. ``render(summary)`` returns every chart the summary has
data for, as ``{file name: SVG text}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

WIDTH = 760
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e4e7eb"
#: psycogreen's own variants in the theme's teal; gevent and eventlet series in two hues.
ACCENT = "#00897b"
OTHER = "#7b8794"
LEGACY = "#b0b8c1"
#: The throughput chart's lines: psycogreen's two in the series' first two hues, 1.0.2 dashed in
#: a lighter one of each.
VARIANT_COLORS = {
    "gevent": "#00897b",
    "eventlet": "#e8772e",
    "legacy-gevent": "#4db6ac",
    "legacy-eventlet": "#f2a66b",
    "threads": "#5c6bc0",
    "psycopg3-gevent": "#8e6c8a",
    "asyncpg-uvloop": "#c0a000",
    "pgbench": "#7b8794",
}
SERIES = ["#00897b", "#e8772e", "#5c6bc0", "#8e6c8a", "#c0a000", "#7b8794", "#d64545", "#3e8ed0"]


@dataclass
class Bar:
    """One bar: the median, and the spread across rounds (``low`` to ``high``), if any."""

    value: float
    low: float | None = None
    high: float | None = None
    text: str = ""  # the figure printed beside the bar


@dataclass
class BarRow:
    label: str
    bars: list[Bar | None]  # one per series; None: not measured
    strong: bool = False  # one of psycogreen's own


@dataclass
class BarChart:
    title: str
    unit: str  # the axis' label
    series: list[str]  # one legend entry per bar of a row; one series: no legend
    rows: list[BarRow]
    note: str = ""  # a line under the chart: what the figures are
    reference: tuple[float, str] | None = None  # a dashed line across, and its label
    colors: list[str] = field(default_factory=list)


@dataclass
class Line:
    label: str
    points: list[float | None]  # one per x position
    strong: bool = False
    dashed: bool = False
    color: str = ""


@dataclass
class LineChart:
    title: str
    unit: str
    x_label: str
    xs: list[str]
    lines: list[Line]
    note: str = ""


def _text(x: float, y: float, content: str, **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def _axis(value: float, count: int = 5) -> tuple[float, float]:
    """The top of an axis from 0 that holds ``value``, and its tick step: about ``count`` ticks
    of 1, 2, 2.5 or 5 times a power of ten."""
    if value <= 0:
        return 1.0, 0.2
    rough = value / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(s * power for s in (1, 2, 2.5, 5, 10) if s * power >= rough)
    return math.ceil(value / step - 1e-9) * step, step


def _ticks(top: float, step: float) -> list[float]:
    return [step * i for i in range(round(top / step) + 1)]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _frame(height: float, body: list[str], title: str) -> str:
    return "\n".join(
        [
            (
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
                f'viewBox="0 0 {WIDTH} {height:.0f}" role="img" font-family="{FONT}" '
                f'font-size="12" fill="{INK}">'
            ),
            f"<title>{escape(title)}</title>",
            (
                f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" rx="6" '
                f'fill="#ffffff" stroke="{GRID}"/>'
            ),
            *body,
            "</svg>",
            "",
        ]
    )


def _legend(x: float, y: float, entries: list[tuple[str, str, bool]]) -> list[str]:
    """Swatches and names in a row from (x, y); (name, color, dashed)."""
    out = []
    for name, color, dashed in entries:
        if dashed:
            out.append(
                f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" '
                f'stroke="{color}" stroke-width="2.5" stroke-dasharray="4 3"/>'
            )
        else:
            out.append(
                f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="16" height="10" rx="2" fill="{color}"/>'
            )
        out.append(_text(x + 21, y, name))
        x += 21 + 7 * len(name) + 18
    return out


def bar_chart(chart: BarChart) -> str:
    """Horizontal bars, one row per label, one bar per series."""
    colors = chart.colors or SERIES
    label_width = 12 + 6.6 * max(len(r.label) for r in chart.rows)
    left = max(150.0, min(330.0, label_width))
    right = WIDTH - 110
    top = 62 + (20 if len(chart.series) > 1 else 0)
    bar_h = 14 if len(chart.series) > 1 else 16
    row_h = bar_h * len(chart.series) + 10
    values = [max(b.value, b.high or 0.0) for r in chart.rows for b in r.bars if b is not None] + (
        [chart.reference[0]] if chart.reference else []
    )
    axis_top, step = _axis(max(values, default=1.0))

    def xpos(value: float) -> float:
        return left + (right - left) * max(value, 0.0) / axis_top

    body = [_text(16, 24, chart.title, font_size="15", font_weight="600")]
    if len(chart.series) > 1:
        body += _legend(left, 52, [(s, colors[i], False) for i, s in enumerate(chart.series)])
    plot_bottom = top + row_h * len(chart.rows)
    for tick in _ticks(axis_top, step):
        x = xpos(tick)
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{plot_bottom:.1f}" '
            f'stroke="{GRID}"/>'
        )
        body.append(_text(x, plot_bottom + 16, _number(tick), text_anchor="middle", fill=MUTED))
    body.append(
        _text((left + right) / 2, plot_bottom + 34, chart.unit, text_anchor="middle", fill=MUTED)
    )
    for index, row in enumerate(chart.rows):
        y0 = top + row_h * index + 5
        middle = y0 + bar_h * len(chart.series) / 2
        body.append(
            _text(
                left - 10,
                middle + 4,
                row.label,
                text_anchor="end",
                font_weight="600" if row.strong else "400",
            )
        )
        for series, bar in enumerate(row.bars):
            y = y0 + bar_h * series
            if bar is None:
                body.append(_text(left + 4, y + bar_h - 4, "not measured", fill=MUTED))
                continue
            if len(chart.series) > 1:
                color = colors[series]
            else:
                color = ACCENT if row.strong else (LEGACY if "1.0.2" in row.label else OTHER)
            width = xpos(bar.value) - left
            body.append(
                f'<rect x="{left:.1f}" y="{y + 1:.1f}" width="{width:.1f}" '
                f'height="{bar_h - 3}" rx="2" fill="{color}"/>'
            )
            end = xpos(bar.value)
            if bar.low is not None and bar.high is not None and bar.high > bar.low:
                lo, hi, mid = xpos(bar.low), xpos(bar.high), y + bar_h / 2 - 0.5
                body.append(
                    f'<line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}" '
                    f'stroke="{INK}" stroke-width="1.2"/>'
                )
                for cap in (lo, hi):
                    body.append(
                        f'<line x1="{cap:.1f}" y1="{mid - 4:.1f}" x2="{cap:.1f}" '
                        f'y2="{mid + 4:.1f}" stroke="{INK}" stroke-width="1.2"/>'
                    )
                end = max(end, hi)
            # A white halo keeps the figure legible where it crosses the reference line.
            body.append(
                _text(
                    end + 5,
                    y + bar_h - 4,
                    bar.text or _number(bar.value),
                    fill=MUTED,
                    stroke="#ffffff",
                    stroke_width="3",
                    paint_order="stroke",
                )
            )
    if chart.reference is not None:
        value, name = chart.reference
        x = xpos(value)
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{plot_bottom:.1f}" '
            f'stroke="{INK}" stroke-dasharray="5 4"/>'
        )
        body.append(_text(x + 4, top - 10, name, fill=MUTED))
    return _frame(_footer(body, chart.note, plot_bottom + 40), body, chart.title)


def _footer(body: list[str], note: str, y: float) -> float:
    """Put ``note`` under the chart from ``y``; the chart's height."""
    if note:
        body.append(_text(16, y + 20, note, fill=MUTED, font_size="11"))
        return y + 32
    return y + 10


def line_chart(chart: LineChart) -> str:
    """One line per variant through a figure at each x position (categories, evenly spaced)."""
    left, right, top = 80.0, WIDTH - 30.0, 46.0
    bottom = top + 250.0
    values = [p for line in chart.lines for p in line.points if p is not None]
    axis_top, step = _axis(max(values, default=1.0))

    def xpos(index: int) -> float:
        return left + (right - left) * index / max(len(chart.xs) - 1, 1)

    def ypos(value: float) -> float:
        return bottom - (bottom - top) * value / axis_top

    body = [_text(16, 24, chart.title, font_size="15", font_weight="600")]
    for tick in _ticks(axis_top, step):
        y = ypos(tick)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(_text(left - 8, y + 4, _number(tick), text_anchor="end", fill=MUTED))
    for index, x_value in enumerate(chart.xs):
        body.append(_text(xpos(index), bottom + 18, x_value, text_anchor="middle", fill=MUTED))
    body.append(
        _text((left + right) / 2, bottom + 36, chart.x_label, text_anchor="middle", fill=MUTED)
    )
    middle = (top + bottom) / 2
    body.append(
        _text(
            22,
            middle,
            chart.unit,
            fill=MUTED,
            text_anchor="middle",
            transform=f"rotate(-90 22 {middle:.1f})",
        )
    )
    # Strong lines last: drawn over the others.
    for number, line in sorted(enumerate(chart.lines), key=lambda item: item[1].strong):
        color = line.color or SERIES[number % len(SERIES)]
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        width = 3.2 if line.strong else 1.8
        points = [(xpos(i), ypos(p)) for i, p in enumerate(line.points) if p is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" '
                f'stroke-width="{width}" stroke-linejoin="round"{dash}/>'
            )
        for x, y in points:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{color}"/>')
    # The legend under the plot, three to a row, in the order of the lines.
    legend_top = bottom + 62
    column = (WIDTH - 32) / 3
    for number, line in enumerate(chart.lines):
        color = line.color or SERIES[number % len(SERIES)]
        x = 16 + column * (number % 3)
        y = legend_top + 20 * (number // 3)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        width = 3.2 if line.strong else 1.8
        body.append(
            f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 24:.1f}" y2="{y - 4:.1f}" '
            f'stroke="{color}" stroke-width="{width}"{dash}/>'
        )
        body.append(_text(x + 30, y, line.label, font_weight="600" if line.strong else "400"))
    rows = (len(chart.lines) + 2) // 3
    return _frame(_footer(body, chart.note, legend_top + 20 * rows - 8), body, chart.title)


# -- the report's charts -------------------------------------------------------------------------
#
# Each takes the report's summary (see bench/run.py: summary of each section) and returns its
# chart, or None when the summary lacks the section.


def _case(summary: dict[str, Any], section: str, **match: Any) -> dict[str, Any] | None:
    for case in summary.get("sections", {}).get(section, {}).get("cases", []):
        if all(case["case"].get(k) == v for k, v in match.items()):
            return dict(case)
    return None


def _bar(stat: dict[str, Any] | None, fmt: str = "{:.3g}") -> Bar | None:
    if not stat or stat.get("n", 0) == 0:
        return None
    return Bar(stat["median"], stat.get("min"), stat.get("max"), fmt.format(stat["median"]))


def _variant_rows(
    case: dict[str, Any], labels: dict[str, str], key: str, fmt: str, variants: list[str]
) -> list[BarRow]:
    rows = []
    for variant in variants:
        item = case["variants"].get(variant)
        if item is None:
            continue
        label = labels.get(variant, variant).replace("**", "")
        rows.append(
            BarRow(
                label, [_bar(item["columns"].get(key), fmt)], strong="**" in labels.get(variant, "")
            )
        )
    return rows


def _rounds(summary: dict[str, Any], section: str) -> str:
    rounds = summary["sections"][section].get("rounds")
    return f"{rounds} round{'s' if rounds != 1 else ''}" if rounds else "the rounds"


def throughput(summary: dict[str, Any], labels: dict[str, str]) -> LineChart | None:
    cases = summary.get("sections", {}).get("throughput", {}).get("cases", [])
    if len(cases) < 2:
        return None
    variants = [
        v
        for v in (
            "threads",
            "gevent",
            "eventlet",
            "legacy-gevent",
            "legacy-eventlet",
            "psycopg3-gevent",
            "asyncpg-uvloop",
            "pgbench",
        )
        if all(v in c["variants"] for c in cases)
    ]
    lines = []
    for variant in variants:
        points = []
        for case in cases:
            stat = case["variants"][variant]["columns"].get("qps")
            points.append(stat["median"] if stat and stat.get("n") else None)
        label = labels.get(variant, variant)
        lines.append(
            Line(
                label.replace("**", ""),
                points,
                strong="**" in label,
                dashed="1.0.2" in label,
                color=VARIANT_COLORS.get(variant, ""),
            )
        )
    return LineChart(
        "Throughput: SELECT 1 for a fixed time, by concurrent clients",
        "queries/s",
        "concurrent clients (threads for psycopg2, greenlets or tasks otherwise)",
        [str(c["case"].get("clients")) for c in cases],
        lines,
        note=f"Median of {_rounds(summary, 'throughput')}, whole client process; saturated "
        "figures swing ±15% between runs.",
    )


def query_cpu(summary: dict[str, Any], labels: dict[str, str]) -> BarChart | None:
    case = _case(summary, "latency")
    if case is None:
        return None
    rows = _variant_rows(case, labels, "cpu_us", "{:.1f} µs", list(case["variants"]))
    return BarChart(
        "Client CPU per query, one client (SELECT 1 in a loop)",
        "client CPU µs per query (less is better)",
        ["cpu"],
        rows,
        note=f"Median, and min–max, of {_rounds(summary, 'latency')}: what each library costs "
        "the client process per query.",
    )


def batch_500(summary: dict[str, Any], labels: dict[str, str]) -> BarChart | None:
    case = _case(summary, "concurrency", clients=500)
    if case is None:
        return None
    rows = _variant_rows(case, labels, "ratio", "{:.3f}", list(case["variants"]))
    return BarChart(
        "500 clients × 20 × pg_sleep(0.05): wall time over the ideal 1.0 s",
        "wall time / ideal (less is better; 1 = no overhead at all)",
        ["ratio"],
        rows,
        reference=(1.0, "ideal"),
        note=f"Median, and min–max, of {_rounds(summary, 'concurrency')}; client and 500 server "
        "backends share the machine's cores.",
    )


def hub_gaps(summary: dict[str, Any], labels: dict[str, str]) -> BarChart | None:
    case = _case(summary, "fairness")
    if case is None:
        return None
    rows = []
    for variant, item in case["variants"].items():
        label = labels.get(variant, variant)
        rows.append(
            BarRow(
                label.replace("**", ""),
                [
                    _bar(item["columns"].get("max_gap_ms"), "{:.1f} ms"),
                    _bar(item["columns"].get("p99_gap_ms"), "{:.1f} ms"),
                ],
                strong="**" in label,
            )
        )
    return BarChart(
        "Fairness: a 10 ms heartbeat beside 100 clients in long queries",
        "gap between two heartbeat ticks, ms (ideal: 10)",
        ["max gap", "99th percentile"],
        rows,
        reference=(10.0, "10 ms"),
        colors=[ACCENT, "#80cbc4"],
        note=f"Median, and min–max, of {_rounds(summary, 'fairness')}; 100 clients each run "
        "pg_sleep(0.1) 20 times, waking in bursts.",
    )


INTERRUPT_CASES = {
    "Timeout": "scheduler Timeout",
    "kill": "kill",
    "psycogreen deadline": "psycogreen.core.timeout()",
    "psycogreen conn.cancel()": "conn.cancel(), guarded",
    "psycopg2 conn.cancel()": "psycopg2's own cancel()",
}


def interrupt(summary: dict[str, Any], labels: dict[str, str]) -> BarChart | None:
    del labels  # the cases have their own names
    section = summary.get("sections", {}).get("interrupt")
    if not section:
        return None
    schedulers = list(section["schedulers"])
    rows = []
    for case, name in INTERRUPT_CASES.items():
        bars: list[Bar | None] = []
        for sched in schedulers:
            stat = section["schedulers"][sched].get(case, {}).get("settle")
            bars.append(
                None
                if not stat or not stat.get("n")
                else Bar(
                    stat["median"] * 1000,
                    None,
                    stat["max"] * 1000,
                    f"{stat['median'] * 1000:.1f} ms (max {stat['max'] * 1000:.1f})",
                )
            )
        rows.append(BarRow(name, bars))
    for row in rows:  # the whisker runs from the median to the max
        for bar in row.bars:
            if bar is not None:
                bar.low = bar.value
    return BarChart(
        "Interrupting pg_sleep(5): from the interrupt until the server's backend is idle",
        "ms from the interrupt until pg_stat_activity shows the backend idle (less is better)",
        schedulers,
        rows,
        note=f"Median of {section.get('rounds', '?')} runs, line to the max; interrupted after "
        "0.1 s, then polled every 0.5 ms on another connection.",
    )


def copy(summary: dict[str, Any], labels: dict[str, str]) -> BarChart | None:
    del labels
    section = summary.get("sections", {}).get("copy")
    if not section:
        return None
    schedulers = list(dict.fromkeys(row["scheduler"] for row in section["rows"]))
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for row in section["rows"]:
        grouped.setdefault(f"{row['format']} {row['direction']}", {})[row["scheduler"]] = row
    rows = []
    for name, by_sched in grouped.items():
        bars: list[Bar | None] = []
        for sched in schedulers:
            row = by_sched.get(sched)
            ratio = row["ratio"] if row else None
            bars.append(
                None
                if not ratio
                else Bar(
                    ratio["median"], ratio.get("min"), ratio.get("max"), f"{ratio['median']:.2f}×"
                )
            )
        rows.append(BarRow(name, bars))
    return BarChart(
        "COPY: psycogreen's cooperative COPY against psycopg2's own blocking COPY",
        "wall time, psycogreen / psycopg2 blocking (less is better; 1 = as fast)",
        schedulers,
        rows,
        reference=(1.0, "as fast"),
        note=f"{section['params'].get('rows', 0):,} rows; median of the per-round ratios, and "
        f"min–max, of {section.get('rounds', '?')} rounds.",
    )


#: file name -> (chart builder, the section above whose tables it goes).
CHARTS: dict[str, tuple[Callable[[dict[str, Any], dict[str, str]], Any], str]] = {
    "throughput.svg": (throughput, "throughput"),
    "query-cpu.svg": (query_cpu, "latency"),
    "batch-500.svg": (batch_500, "concurrency"),
    "hub-gaps.svg": (hub_gaps, "fairness"),
    "interrupt.svg": (interrupt, "interrupt"),
    "copy.svg": (copy, "copy"),
}


def render(summary: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """Every chart the summary has the data for: file name -> SVG text."""
    out = {}
    for name, (build, _section) in CHARTS.items():
        chart = build(summary, labels)
        if chart is None:
            continue
        out[name] = line_chart(chart) if isinstance(chart, LineChart) else bar_chart(chart)
    return out


def charts_of(section: str) -> list[str]:
    """The chart files that summarise ``section``."""
    return [name for name, (_build, key) in CHARTS.items() if key == section]
