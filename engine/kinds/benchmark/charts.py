"""The charts of the benchmark report page (inline SVG from engine.render's primitives)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.render import line_chart


def charts(report: dict[str, Any]) -> dict[str, Markup]:
    results = report.get("results", [])
    by_threads: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_threads.setdefault(r["threads"], []).append(r)
    latency = {
        f"p50, {t} thread(s)": [(r["batch_size"], r["latency_ms"]["p50"]) for r in rs] for t, rs in by_threads.items()
    }
    latency.update(
        {f"p99, {t} thread(s)": [(r["batch_size"], r["latency_ms"]["p99"]) for r in rs] for t, rs in by_threads.items()}
    )
    throughput = {
        f"{t} thread(s)": [(r["batch_size"], r["throughput_samples_per_s"]) for r in rs] for t, rs in by_threads.items()
    }
    log_x = len({r["batch_size"] for r in results}) > 1
    return {
        "latency": line_chart(latency, x_label="batch size", y_label="latency (ms)", log_x=log_x),
        "throughput": line_chart(throughput, x_label="batch size", y_label="samples / s", log_x=log_x),
    }
