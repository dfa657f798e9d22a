"""Reports a person can open: one HTML page per job, Jinja2 templates, charts drawn as inline SVG.

No JavaScript, no CDN, no external fonts: the page works offline and from an e-mail attachment. This module holds
the shared layout (engine/templates: base page, comparison macros, the generic page) and the chart primitives;
each kind keeps its page template and its charts in its own folder.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

_TEMPLATES = Path(__file__).resolve().parent / "templates"
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        if abs(value) < 1e-4:  # 0.00317 stays readable; 3.2e-05 is clearer than 0.000032
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


_SI = {-12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}


def axis_ticks(values: list[float]) -> list[str]:
    """Labels for one axis's evenly spaced ticks in one format: plain numbers from 0.1 to 9999, else a shared SI
    prefix (m, µ, k, M ...) chosen by the largest value; the fewest decimals (at most 3) that keep every label within
    5% of a tick step of its value: 0, 4.5m, 8.9m, 13.4m (not 0.0134 beside 8.92e-03)."""
    finite = [v for v in values if math.isfinite(v)]
    largest = max((abs(v) for v in finite), default=0.0)
    if largest == 0 or len(finite) != len(values):
        return [_fmt(float(v), 3) for v in values]
    exponent = 0 if 0.1 <= largest < 1e4 else max(-12, min(12, math.floor(math.log10(largest) / 3) * 3))
    scale, prefix = 10.0**exponent, _SI[exponent]
    scaled = [v / scale for v in values]
    steps = [abs(b - a) for a, b in zip(scaled, scaled[1:], strict=False) if b != a]
    tolerance = 0.05 * min(steps) if steps else 0.0
    decimals = next((d for d in range(4) if all(abs(v - round(v, d)) <= tolerance for v in scaled)), 3)
    labels = [f"{v:.{decimals}f}" for v in scaled]
    return [("0" if float(label) == 0 else label + prefix) for label in labels]


def human_bytes(value: Any) -> str:
    """1,234,567 -> "1.18 MiB": sizes in tables stay short."""
    if not isinstance(value, int | float):
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} GiB"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _y_range(
    points: list[tuple[float, float]], intervals: dict[str, list[tuple[float, float, float]]] | None, from_zero: bool
) -> tuple[float, float]:
    """The y axis: from 0 (or below, for negative values) to 10% above the top; or the data's span, padded."""
    whiskers = [w for ws in (intervals or {}).values() for w in ws]
    highs = [y for _, y in points] + [hi for _, _, hi in whiskers]
    lows = [y for _, y in points] + [lo for _, lo, _ in whiskers]
    y_max = max(highs) * 1.1 if max(highs) > 0 else 0.0
    y_min = min(0.0, min(lows) * 1.1)
    if not from_zero:
        pad = 0.1 * ((max(highs) - min(lows)) or abs(max(highs)) or 1.0)
        y_min, y_max = min(lows) - pad, max(highs) + pad
    return (y_min, y_max) if y_max != y_min else (y_min, y_min + 1.0)


def _whisker(name: str, color: str, x: float, at: float, low_y: float, high_y: float, lo: float, hi: float) -> str:
    """A vertical 95% interval with caps, at pixel column `at` from pixel row low_y to high_y."""
    return (
        f'<path d="M{at - 4:.1f},{low_y:.1f}h8M{at:.1f},{low_y:.1f}V{high_y:.1f}M{at - 4:.1f},{high_y:.1f}h8" '
        f'stroke="{color}" stroke-width="1.5" fill="none"><title>{_esc(name)} at {_fmt(x)}: 95% interval '
        f"{_fmt(lo)} to {_fmt(hi)}</title></path>"
    )


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    width: int = 560,
    height: int = 300,
    marks: list[tuple[float, str]] | None = None,
    intervals: dict[str, list[tuple[float, float, float]]] | None = None,
    from_zero: bool = True,
) -> Markup:
    """Lines with markers: {name: [(x, y), ...]}. x on a log2 scale when log_x (batch sizes).

    `marks`: dashed vertical lines at x with a label (e.g. the best epoch). `intervals`: {name: [(x, low, high)]},
    whiskers in the series' colour (95% intervals). The y axis starts at 0 (below it for negative values); with
    `from_zero` False it spans the data (metrics near 1, such as accuracies, stay readable)."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return Markup("")
    left, right, top, bottom = 64, 16, 16, 48
    fx = (lambda v: math.log2(v)) if log_x else (lambda v: v)
    xs = [fx(x) for x, _ in points]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = _y_range(points, intervals, from_zero)
    if x_max == x_min:
        x_min, x_max = x_min - 1, x_max + 1

    def px(x: float) -> float:
        return left + (fx(x) - x_min) / (x_max - x_min) * (width - left - right)

    def py(y: float) -> float:
        return top + (1 - (y - y_min) / (y_max - y_min)) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(y_label)} by {_esc(x_label)}" class="chart">'
    ]
    y_ticks = [y_min + (y_max - y_min) * i / 4 for i in range(5)]
    for y, label in zip(y_ticks, axis_ticks(y_ticks), strict=True):  # horizontal grid and y ticks
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{label}</text>')
    ticks = sorted({x for x, _ in points})
    if len(ticks) > 12:  # long x axes (epochs): about ten ticks
        step = math.ceil(len(ticks) / 10)
        ticks = ticks[::step]
    for x in ticks:
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{_fmt(x, 4)}</text>'
        )
    for i, (x, label) in enumerate(marks or []):
        parts.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{height - bottom}" stroke="{PALETTE[3 + i % 3]}" '
            f'stroke-dasharray="4 3"><title>{_esc(label)}</title></line>'
            + (  # labels near the right edge go to the left of their line
                f'<text x="{px(x) - 4:.1f}" y="{top + 12 + 14 * i}" font-size="11" text-anchor="end" '
                if px(x) > width - right - 110
                else f'<text x="{px(x) + 4:.1f}" y="{top + 12 + 14 * i}" font-size="11" '
            )
            + f'fill="{PALETTE[3 + i % 3]}">{_esc(label)}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">'
        f"{_esc(x_label)}</text>"
    )
    parts.append(
        f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2})">{_esc(y_label)}</text>'
    )
    # The legend goes in the upper corner the lines leave free: top right when they start high (falling losses),
    # top left when they end high (rising accuracy); below the marks' labels.
    starts = [sorted(p)[0][1] for p in series.values() if p]
    ends = [sorted(p)[-1][1] for p in series.values() if p]
    legend_width = 22 + 7 * max(len(str(n)) for n in series)
    legend_x = width - right - legend_width - 4 if sum(starts) > sum(ends) else left + 8
    legend_y = top + 4 + 14 * len(marks or [])
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        parts += [
            _whisker(name, color, x, px(x), py(lo), py(hi), lo, hi) for x, lo, hi in (intervals or {}).get(name, [])
        ]
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}">'
                f"<title>{_esc(name)}: {_fmt(x)} -> {_fmt(y)}</title></circle>"
            )
        parts.append(
            f'<rect x="{legend_x}" y="{legend_y + 16 * i}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{legend_y + 9 + 16 * i}" font-size="11">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - text parts go through _esc, numbers through _fmt


def heatmap(matrix: list[list[int]], *, row_label: str, col_label: str, cell: int = 28) -> Markup:
    """A confusion matrix: darker is more; each cell shows its count."""
    n = len(matrix)
    if n == 0:
        return Markup("")
    peak = max(max(row) for row in matrix) or 1
    left, top = 48, 40
    size = left + n * cell + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {top + n * cell + 8}" '
        f'width="{size}" height="{top + n * cell + 8}" role="img" aria-label="confusion matrix" class="chart">',
        f'<text x="{left + n * cell / 2}" y="12" text-anchor="middle" font-size="12">{_esc(col_label)}</text>',
    ]
    for j in range(n):
        parts.append(
            f'<text x="{left + j * cell + cell / 2}" y="{top - 8}" text-anchor="middle" font-size="10">{j}</text>'
        )
    for i, row in enumerate(matrix):
        parts.append(
            f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" font-size="10">{i}</text>'
        )
        for j, count in enumerate(row):
            shade = count / peak
            fill = f"rgba(37,99,235,{0.08 + 0.92 * shade:.3f})" if count else "#f9fafb"
            ink = "#fff" if shade > 0.55 else "#111"
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                f'fill="{fill}"><title>{_esc(row_label)} {i}, predicted {j}: {count}</title></rect>'
            )
            if count:
                parts.append(
                    f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                    f'text-anchor="middle" font-size="10" fill="{ink}">{count}</text>'
                )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - text parts go through _esc, numbers through _fmt


def bars(rows: list[tuple[str, float]], *, value_label: str, width: int = 560, bar: int = 16) -> Markup:
    """Horizontal bars (e.g. SQNR per layer, worst first); labels are escaped, long ones shortened."""
    if not rows:
        return Markup("")
    left, right, top = 220, 60, 8
    peak = max(v for _, v in rows) or 1.0
    height = top + len(rows) * (bar + 4) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(value_label)}" class="chart">'
    ]
    value_labels = axis_ticks([float(v) for _, v in rows])  # one format for the chart's numbers
    for i, (label, value) in enumerate(rows):
        y = top + i * (bar + 4)
        w = max(1.0, (width - left - right) * max(value, 0.0) / peak)
        short = label if len(label) <= 34 else label[:15] + "…" + label[-16:]
        parts.append(
            f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end" font-size="11">{_esc(short)}'
            f"<title>{_esc(label)}</title></text>"
        )
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{PALETTE[0]}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 4}" font-size="11">{value_labels[i]}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="12">{_esc(value_label)}</text></svg>')
    return Markup("".join(parts))  # noqa: S704 - text parts go through _esc, numbers through _fmt


def interval_bars(
    rows: list[tuple[str, float, list[float] | None, str]], *, value_label: str, width: int = 560, bar: int = 18
) -> Markup:
    """Horizontal bars with 95% intervals as whiskers: (label, value, [low, high] or None, colour key)."""
    if not rows:
        return Markup("")
    left, right, top = 160, 70, 8
    peak = max(max(v, (ci or [v, v])[1]) for _, v, ci, _ in rows) or 1.0
    height = top + len(rows) * (bar + 6) + 24
    colours = {"model": PALETTE[0], "baseline": "#9ca3af"}

    def px(v: float) -> float:
        return left + (width - left - right) * max(v, 0.0) / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(value_label)}" class="chart">'
    ]
    for i, (label, value, ci, key) in enumerate(rows):
        y = top + i * (bar + 6)
        parts.append(f'<text x="{left - 6}" y="{y + bar - 5}" text-anchor="end" font-size="11">{_esc(label)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{max(1.0, px(value) - left):.1f}" height="{bar}" '
            f'fill="{colours.get(key, PALETTE[0])}"/>'
        )
        if ci:
            lo, hi, mid = px(ci[0]), px(ci[1]), y + bar / 2
            parts.append(
                f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{mid}" y2="{mid}" stroke="#111" stroke-width="1.5"/>'
                f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{y + 3}" y2="{y + bar - 3}" stroke="#111"/>'
                f'<line x1="{hi:.1f}" x2="{hi:.1f}" y1="{y + 3}" y2="{y + bar - 3}" stroke="#111"/>'
            )
        end = px(ci[1]) if ci else px(value)
        parts.append(f'<text x="{end + 4:.1f}" y="{y + bar - 5}" font-size="11">{_fmt(float(value), 4)}</text>')
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="12">{_esc(value_label)}</text></svg>')
    return Markup("".join(parts))  # noqa: S704 - text parts go through _esc, numbers through _fmt


def scatter(points: list[dict[str, Any]], *, x_label: str, y_label: str, width: int = 560, height: int = 320) -> Markup:
    """Trials as points {x, y, label, front, chosen}: the Pareto front filled and joined, the chosen one ringed."""
    if not points:
        return Markup("")
    left, right, top, bottom = 64, 16, 16, 48
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    x_min, x_max = min(xs + [0.0]), max(xs) * 1.08 or 1.0
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.1 or abs(y_hi) * 0.01 or 0.01
    y_min, y_max = y_lo - pad, y_hi + pad

    def px(x: float) -> float:
        return left + (x - x_min) / (x_max - x_min) * (width - left - right)

    def py(y: float) -> float:
        return top + (1 - (y - y_min) / (y_max - y_min)) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(y_label)} by {_esc(x_label)}" class="chart">'
    ]
    y_ticks = [y_min + (y_max - y_min) * i / 4 for i in range(5)]
    x_ticks = [x_min + (x_max - x_min) * i / 4 for i in range(5)]
    for y, x, y_label_, x_label_ in zip(y_ticks, x_ticks, axis_ticks(y_ticks), axis_ticks(x_ticks), strict=True):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{y_label_}</text>')
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">{x_label_}</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">'
        f"{_esc(x_label)}</text>"
        f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2})">{_esc(y_label)}</text>'
    )
    front = sorted((p for p in points if p.get("front")), key=lambda p: p["x"])
    if len(front) > 1:
        path = " ".join(f"{px(p['x']):.1f},{py(p['y']):.1f}" for p in front)
        parts.append(f'<polyline fill="none" stroke="{PALETTE[2]}" stroke-width="1.5" points="{path}"/>')
    for p in points:
        color = PALETTE[2] if p.get("front") else "#9ca3af"
        fill = color if p.get("front") else "#fff"
        parts.append(
            f'<circle cx="{px(p["x"]):.1f}" cy="{py(p["y"]):.1f}" r="5" fill="{fill}" stroke="{color}" '
            f'stroke-width="2"><title>{_esc(p["label"])}: {_fmt(p["x"])}, {_fmt(p["y"])}</title></circle>'
        )
        if p.get("chosen"):
            parts.append(
                f'<circle cx="{px(p["x"]):.1f}" cy="{py(p["y"]):.1f}" r="10" fill="none" stroke="{PALETTE[1]}" '
                'stroke-width="2"/>'
            )
    parts.append(
        f'<circle cx="{left + 12}" cy="{top + 8}" r="5" fill="{PALETTE[2]}"/><text x="{left + 22}" y="{top + 12}" '
        f'font-size="11">Pareto front</text><circle cx="{left + 112}" cy="{top + 8}" r="8" fill="none" '
        f'stroke="{PALETTE[1]}" stroke-width="2"/><text x="{left + 126}" y="{top + 12}" font-size="11">chosen</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - text parts go through _esc, numbers through _fmt


def comparison_latency(comparison: dict[str, Any], a: str = "original", b: str = "candidate") -> Markup:
    """p50 latency against batch size of both models of a comparison block, one line per model and thread count."""
    pairs = (comparison or {}).get("latency_ms", [])
    series: dict[str, list[tuple[float, float]]] = {}
    for p in pairs:
        series.setdefault(f"{a}, {p['threads']} thread(s)", []).append((p["batch_size"], p["original_ms"]["p50"]))
        series.setdefault(f"{b}, {p['threads']} thread(s)", []).append((p["batch_size"], p["candidate_ms"]["p50"]))
    return line_chart(
        series, x_label="batch size", y_label="p50 latency (ms)", log_x=len({p["batch_size"] for p in pairs}) > 1
    )


def front_charts(
    rows: list[dict[str, Any]], *, y: str, y_label: str, chosen: int | None, latency_label: str
) -> tuple[Markup, Markup]:
    """Trials (index, name, speedup, size_ratio, pareto and the `y` value) as two Pareto scatters: relative latency
    and relative size against `y`; rows without a `y` value are left out, the `chosen` index is ringed."""

    def points(x: Any) -> list[dict[str, Any]]:
        return [
            {
                "x": x(r),
                "y": r[y],
                "label": f"{r['index']}: {r['name']}",
                "front": r.get("pareto"),
                "chosen": r["index"] == chosen,
            }
            for r in rows
            if x(r) is not None and r.get(y) is not None
        ]

    return (
        scatter(
            points(lambda r: 1 / r["speedup"] if r.get("speedup") else None), x_label=latency_label, y_label=y_label
        ),
        scatter(points(lambda r: r.get("size_ratio")), x_label="size vs original", y_label=y_label),
    )


_SHARED = FileSystemLoader(_TEMPLATES)
_envs: dict[str, Environment] = {}


def _environment(folder: Path | None) -> Environment:
    """A kind's templates (its folder) over the shared layout and macros (engine/templates)."""
    key = str(folder)
    if key not in _envs:
        loader = ChoiceLoader([FileSystemLoader(folder), _SHARED]) if folder is not None else _SHARED
        env = Environment(loader=loader, autoescape=select_autoescape(["html"]))
        env.filters["fmt"] = _fmt
        env.filters["bytes"] = human_bytes
        env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
        env.globals.update(heatmap=heatmap, comparison_latency=comparison_latency)
        _envs[key] = env
    return _envs[key]


def render_page(
    report: dict[str, Any], job: dict[str, Any], *, folder: Path | None, template: str | None, charts: dict[str, Any]
) -> str:
    """HTML for a job's report: the kind's template from its folder (or the generic page that lists the JSON).
    `job` carries id, kind, status, timestamps, model id (display only); `charts` are the kind's inline SVGs."""
    if folder is None or template is None or not (folder / template).exists():
        return _environment(None).get_template("generic.html").render(report=report, job=job, charts=charts)
    return _environment(folder).get_template(template).render(report=report, job=job, charts=charts)
