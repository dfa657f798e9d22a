"""The charts of the optimize report page (inline SVG from engine.render's primitives)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.render import front_charts


def charts(report: dict[str, Any]) -> dict[str, Markup]:
    """The front: every measured trial (and the original) by latency and by size against the metric."""
    rows = [r for r in [report.get("original", {}), *report.get("trials", [])] if r.get("status") == "measured"]
    labeled = any(r.get("metric") is not None for r in rows)
    metric = "metric" if labeled else "cosine"
    y_label = "primary metric on eval" if labeled else "cosine to the original's output"

    by_latency, by_size = front_charts(
        rows,
        y=metric,
        y_label=y_label,
        chosen=report.get("recommended") or report.get("closest"),
        latency_label="latency vs original (timed interleaved; lower is faster)",
    )
    return {"front_latency": by_latency, "front_size": by_size}
