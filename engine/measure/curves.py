"""Learning curves: a Keras or Lightning training history read as train/validation losses and scores, the best
epoch by early stopping replayed on it, the overfitting onset and the trend at the end. Used by diagnose (an
uploaded history) and distill (its own training)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.select.stopping import replay

MINIMIZE_HINTS = ("loss", "error", "mse", "mae", "rmse", "perplexity")


def minimize(metric: str) -> bool:
    return any(h in metric.lower() for h in MINIMIZE_HINTS)


def find_curves(curves: dict[str, list[float]]) -> dict[str, str | None]:
    """Name the train and validation loss (and accuracy-like) curves in a Keras or Lightning history."""
    keys = list(curves)

    def is_val(k: str) -> bool:
        low = k.lower()
        return low.startswith(("val_", "val/", "valid", "validation")) or "_val_" in low or low.endswith("_val")

    def pick(pred: Callable[[str], bool]) -> str | None:
        found = [k for k in keys if pred(k)]
        return min(found, key=len) if found else None

    return {
        "train_loss": pick(lambda k: not is_val(k) and "loss" in k.lower() and not k.lower().startswith("test")),
        "val_loss": pick(lambda k: is_val(k) and "loss" in k.lower()),
        "train_score": pick(lambda k: not is_val(k) and ("acc" in k.lower() or "r2" in k.lower())),
        "val_score": pick(lambda k: is_val(k) and ("acc" in k.lower() or "r2" in k.lower())),
    }


def trend(values: list[float], window: int) -> float | None:
    """Least-squares slope over the last `window` finite points, relative to the curve's range per epoch."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)][-window:]
    if len(pts) < 3:
        return None
    x = np.array([p[0] for p in pts], dtype=np.float64)
    v = np.array([p[1] for p in pts], dtype=np.float64)
    finite = np.array([u for u in values if u is not None and math.isfinite(u)])
    scale = float(finite.max() - finite.min()) or 1.0
    return float(np.polyfit(x, v, 1)[0] / scale)


class HistoryAnalysis(BaseModel):
    epochs: int
    curves: dict[str, str | None] = Field(description="Which history columns were read as train/val loss and score")
    monitor: str | None
    best_epoch: int | None
    stopped_epoch: int | None = Field(description="Where EarlyStopping(patience) would have stopped, if it would")
    restored_epoch: int | None = Field(
        default=None, description="The epoch whose weights EarlyStopping(restore_best_weights=True) would keep"
    )
    patience: int
    min_delta: float
    overfit_onset_epoch: int | None = Field(description="Validation stops improving while training keeps improving")
    val_loss_rise: float | None = Field(
        default=None,
        description="How far the validation loss ends above its minimum, relative to it ((last - min) / |min|)",
    )
    still_improving: bool | None = Field(description="Both losses still falling over the last epochs")
    plateaued: bool | None = Field(description="Both losses flat over the last epochs")
    train_slope: float | None = Field(description="Last-window slope of the train loss (range per epoch)")
    val_slope: float | None
    values: dict[str, list[float | None]] = Field(description="The curves read (for the report's chart)")


def analyse_history(
    curves: dict[str, list[float]],
    warnings: list[str],
    *,
    monitor: str | None = None,
    min_delta: float = 0.0,
    patience: int | None = None,
) -> HistoryAnalysis:
    """Read a training history: which columns are the losses, the best epoch and where early stopping (patience,
    default max(3, epochs/10)) would stop, the overfitting onset, whether the curves still fall or are flat."""
    monitor_asked = monitor
    names = find_curves(curves)
    epochs = len(next(iter(curves.values())))
    monitor = monitor_asked or names["val_loss"] or names["val_score"]
    if monitor_asked and monitor_asked not in curves:
        raise EngineError(
            ErrorCode.INCOMPATIBLE_DATA, f"monitor {monitor_asked!r} is not in the history: {sorted(curves)}"
        )
    if names["val_loss"] is None and names["val_score"] is None:
        warnings.append(
            "the history has no validation column (val_loss, val_accuracy, ...): the best epoch and the overfitting "
            "onset cannot be found"
        )
    patience = patience or max(3, epochs // 10)
    stop = {"best_epoch": None, "stopped_epoch": None, "restored_epoch": None}
    if monitor is not None:
        stop = replay(curves[monitor], minimize(monitor), min_delta, patience)
    window = max(3, epochs // 5)
    tl, vl = names["train_loss"], names["val_loss"]
    train_slope = trend(curves[tl], window) if tl else None
    val_slope = trend(curves[vl], window) if vl else None
    onset, rise = None, None
    last, lowest = (_last_finite(curves[vl]), _lowest(curves[vl])) if vl else (None, None)
    if last is not None and lowest:
        rise = (last - lowest) / abs(lowest)
    if tl and vl:
        val = curves[vl]
        best_val = replay(val, True, min_delta, epochs + 1)["best_epoch"]
        if best_val is not None and best_val < epochs:
            train = curves[tl]
            t_best, t_end = train[best_val - 1], _last_finite(train)
            v_best, v_end = val[best_val - 1], _last_finite(val)
            span = _span(val)
            if (
                t_end is not None
                and v_end is not None
                and t_end < t_best
                and v_end > v_best + max(min_delta, min(0.02 * span, 0.05 * abs(v_best)))
            ):
                onset = best_val
    falling = 0.01  # a loss falls when it drops by more than 1% of its range per epoch over the window
    still = None if train_slope is None else (train_slope < -falling and (val_slope is None or val_slope < -falling))
    flat = None
    if train_slope is not None:
        flat = abs(train_slope) <= falling and (val_slope is None or abs(val_slope) <= falling)
    values = {k: [None if not math.isfinite(v) else v for v in curves[k]] for k in {v for v in names.values() if v}}
    return HistoryAnalysis(
        epochs=epochs,
        curves=names,
        monitor=monitor,
        best_epoch=stop["best_epoch"],
        stopped_epoch=stop["stopped_epoch"],
        restored_epoch=stop["restored_epoch"],
        patience=patience,
        min_delta=min_delta,
        overfit_onset_epoch=onset,
        val_loss_rise=rise,
        still_improving=still,
        plateaued=flat,
        train_slope=train_slope,
        val_slope=val_slope,
        values=values,
    )


def _last_finite(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return finite[-1] if finite else None


def _lowest(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else None


def _span(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (max(finite) - min(finite)) if finite else 0.0
