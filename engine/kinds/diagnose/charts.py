"""The charts of the diagnose report page (inline SVG from engine.render's primitives)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from engine.render import bars, interval_bars, line_chart


def charts(report: dict[str, Any]) -> dict[str, Markup]:
    primary = report.get("primary_metric", "metric")
    rows = []
    for role, split in (report.get("splits") or {}).items():
        value = split["metrics"].get(primary)
        if value is not None:
            rows.append((role, value, split.get("primary_ci95"), "model"))
        base = split["baseline_metrics"].get(primary)
        if base is not None:
            rows.append((f"{role}, naive baseline", base, None, "baseline"))
    history = report.get("history") or {}
    curves = history.get("curves") or {}
    values = history.get("values") or {}
    losses = {
        name: [(i + 1.0, v) for i, v in enumerate(values.get(key) or []) if v is not None]
        for name, key in (("train loss", curves.get("train_loss")), ("validation loss", curves.get("val_loss")))
        if key
    }
    marks = []
    if history.get("best_epoch"):
        marks.append((float(history["best_epoch"]), f"best epoch {history['best_epoch']}"))
    if history.get("stopped_epoch"):
        marks.append((float(history["stopped_epoch"]), f"early stop {history['stopped_epoch']}"))
    gaps = []
    splits = report.get("splits") or {}
    train_recall = (splits.get("train") or {}).get("per_class_recall") or {}
    val_recall = (splits.get("validation") or {}).get("per_class_recall") or {}
    for c in sorted(set(train_recall) & set(val_recall), key=lambda k: -(train_recall[k] - val_recall[k]))[:20]:
        gaps.append((f"class {c}", train_recall[c] - val_recall[c]))
    alphas = [(w["layer"], w["alpha"]) for w in report.get("weights") or [] if w.get("status") == "fitted"]
    curve = report.get("learning_curve") or {}
    sizes: dict[str, list[tuple[float, float]]] = {}
    whiskers: dict[str, list[tuple[float, float, float]]] = {}
    for role in ("train", "validation"):
        name = f"{role} (re-trained)"
        for pt in curve.get("points") or []:
            if pt.get(role) is not None:
                sizes.setdefault(name, []).append((float(pt["samples"]), pt[role]))
            if pt.get(f"{role}_ci95"):
                whiskers.setdefault(name, []).append((float(pt["samples"]), *pt[f"{role}_ci95"]))
    return {
        "metrics": interval_bars(rows, value_label=f"{primary} with its 95% bootstrap interval"),
        "curves": line_chart(losses, x_label="epoch", y_label="loss", marks=marks) if losses else Markup(""),
        "class_gaps": bars(gaps, value_label="train recall - validation recall"),
        "alphas": bars(alphas, value_label="power-law alpha of the weight spectrum (2-6 is typical)"),
        "learning_curve": line_chart(
            sizes,
            x_label="training samples (log scale)",
            y_label=primary,
            log_x=True,
            intervals=whiskers,
            from_zero=False,
        )
        if sizes
        else Markup(""),
    }
