"""The charts of the quantize report page (inline SVG from engine.render's primitives)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.render import bars, comparison_latency, front_charts


def charts(report: dict[str, Any]) -> dict[str, Markup]:
    errors = (report.get("layer_errors") or {}).get("activations", [])
    auto = report.get("auto") or {}
    trials = [t for t in auto.get("trials", []) if t.get("status") == "measured"]
    metric = auto.get("goal_metric", "metric")
    by_latency, by_size = front_charts(
        trials,
        y="metric",
        y_label=f"{metric} on eval",
        chosen=auto.get("chosen"),
        latency_label=f"latency vs original (batch {(auto.get('timed_at') or {}).get('batch_size', 1)}, 1 thread; "
        "lower is faster)",
    )
    return {
        "trials_latency": by_latency,
        "trials_size": by_size,
        "latency": comparison_latency(report.get("comparison", {}), "original", "quantized"),
        "errors": bars([(r["tensor"], r["sqnr_db"]) for r in errors], value_label="SQNR dB vs float (lower is worse)"),
    }
