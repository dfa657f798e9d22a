"""The charts of the distill report page (inline SVG from engine.render's primitives)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.render import line_chart


def charts(report: dict[str, Any]) -> dict[str, Markup]:
    history = report.get("history") or {}
    curves = {
        name: [(i + 1.0, v) for i, v in enumerate(history.get(key) or []) if v is not None]
        for name, key in (("train loss", "loss"), ("validation loss", "val_loss"))
        if history.get(key)
    }
    marks = [(float(report["best_epoch"]), f"best epoch {report['best_epoch']}")] if report.get("best_epoch") else []
    return {"curves": line_chart(curves, x_label="epoch", y_label="loss", marks=marks) if curves else Markup("")}
