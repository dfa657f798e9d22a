"""Task metrics from model outputs: one set for every kind (evaluate, the comparison block, diagnose, the goal of
a search). Metrics are fractions; the primary metric is higher-is-better (accuracy, r2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from engine.core.errors import EngineError, ErrorCode
from engine.datasets import DatasetSummary

Task = Literal["classification", "regression"]
PRIMARY: dict[str, str] = {"classification": "accuracy", "regression": "r2"}
HIGHER_IS_BETTER = {"accuracy", "macro_f1", "roc_auc", "r2"}
ECE_BINS = 15
MetricFn = Callable[[np.ndarray], float | None]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_probabilities(out: np.ndarray) -> tuple[np.ndarray, Literal["logits", "probabilities"]]:
    """[N, C] probabilities from a model output of logits or probabilities ([N], [N, 1]: binary)."""
    out = out.astype(np.float64).reshape(out.shape[0], -1)
    is_prob = bool(np.all(out >= 0) and np.all(out <= 1))
    if out.shape[1] == 1:
        p1 = out[:, 0] if is_prob else 1.0 / (1.0 + np.exp(-out[:, 0]))
        return np.stack([1 - p1, p1], axis=1), "probabilities" if is_prob else "logits"
    if is_prob and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out, "probabilities"
    return _softmax(out), "logits"


def label_indices(y: np.ndarray, summary: DatasetSummary | None, n_classes: int) -> np.ndarray:
    """Class indices 0..n_classes-1 from labels (integers, booleans, strings in sorted order, or one-hot rows)."""
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    y = y.reshape(-1)
    if y.dtype.kind in "US":
        classes = sorted(np.unique(y).tolist())
        return np.searchsorted(np.asarray(classes), y)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    idx = y.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n_classes:
        raise EngineError(
            ErrorCode.INCOMPATIBLE_DATA,
            f"labels range over [{idx.min()}, {idx.max()}] but the model outputs {n_classes} classes "
            f"(0..{n_classes - 1})",
        )
    return idx


def wilson_ci95(correct: int, n: int) -> list[float]:
    z = 1.959964
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin share."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None with one class only."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    # average ranks over ties: each run of equal scores gets the mean of its 1-based positions
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(score)]
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _class_counts(pred: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.bincount(y[pred == y], minlength=n_classes)
    fp = np.bincount(pred, minlength=n_classes) - tp
    fn = np.bincount(y, minlength=n_classes) - tp
    return tp, fp, fn


def classification_metrics(probs: np.ndarray, y: np.ndarray, *, extended: bool = False) -> dict[str, float | None]:
    """accuracy, macro_f1 (over the classes present in labels or predictions), log_loss; `extended` adds ece and,
    for two classes, roc_auc."""
    pred = probs.argmax(axis=1)
    n_classes = max(probs.shape[1], int(y.max(initial=0)) + 1)
    tp, fp, fn = _class_counts(pred, y, n_classes)
    present = (tp + fp + fn) > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    out: dict[str, float | None] = {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1.mean()) if f1.size else 0.0,
        "log_loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)))),
    }
    if extended:
        out["ece"] = expected_calibration_error(probs, y)
        if probs.shape[1] == 2:
            out["roc_auc"] = roc_auc(probs[:, 1], y == 1)
    return out


def per_class_recall(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp, _, fn = _class_counts(probs.argmax(axis=1), y, probs.shape[1])
    return {str(c): float(tp[c] / (tp[c] + fn[c])) for c in range(probs.shape[1]) if tp[c] + fn[c]}


def regression_metrics(pred: np.ndarray, y: np.ndarray, *, extended: bool = False) -> dict[str, float | None]:
    """mse, mae, r2 (None when the labels are constant); `extended` adds rmse."""
    err = pred - y
    ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
    mse = float((err**2).mean())
    out: dict[str, float | None] = {
        "mse": mse,
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
    }
    if extended:
        out["rmse"] = math.sqrt(mse)
    return out


class Predictions:
    """A model's outputs read for a task against labels: probabilities and class indices, or [N, k] values."""

    def __init__(self, task: str, out: np.ndarray, y: np.ndarray, summary: DatasetSummary | None) -> None:
        self.task, self.n = task, len(y)
        self.interpretation: Literal["logits", "probabilities", "values"] = "values"
        if task == "classification":
            self.values, self.interpretation = class_probabilities(out)
            self.target = label_indices(y, summary, self.values.shape[1])
        else:
            self.values = out.astype(np.float64).reshape(self.n, -1)
            self.target = y.astype(np.float64).reshape(self.n, -1)
            if self.values.shape != self.target.shape:
                raise EngineError(
                    ErrorCode.INCOMPATIBLE_DATA, f"the output has shape {list(out.shape)}, labels {list(y.shape)}"
                )

    def with_values(self, values: np.ndarray) -> Predictions:
        """The same labels read against other predictions (e.g. a naive baseline's)."""
        other = Predictions.__new__(Predictions)
        other.task, other.n, other.interpretation = self.task, self.n, self.interpretation
        other.values, other.target = values, self.target
        return other

    def metrics(self, idx: np.ndarray | None = None, *, extended: bool = False) -> dict[str, float | None]:
        """The task's metrics over the samples `idx` (all when None)."""
        v, t = (self.values, self.target) if idx is None else (self.values[idx], self.target[idx])
        if self.task == "classification":
            return classification_metrics(v, t, extended=extended)
        return regression_metrics(v, t, extended=extended)

    def metric_fn(self, metric: str) -> MetricFn:
        """metric(sample indices), for the bootstrap; accuracy and roc_auc without computing the rest."""
        if self.task == "classification" and metric == "accuracy":
            correct = (self.values.argmax(axis=1) == self.target).astype(np.float64)
            return lambda idx: float(correct[idx].mean())
        if self.task == "classification" and metric == "roc_auc":
            return lambda idx: roc_auc(self.values[idx, 1], self.target[idx] == 1)
        extended = metric in ("ece", "roc_auc", "rmse")
        return lambda idx: self.metrics(idx, extended=extended).get(metric)

    def primary(self) -> float | None:
        return self.metrics().get(PRIMARY[self.task])


def task_of(summary: DatasetSummary | None) -> str | None:
    return summary.label.kind if summary is not None and summary.label is not None else None


def primary_metric(out: np.ndarray, y: np.ndarray, summary: DatasetSummary) -> dict[str, Any]:
    """{metric, value}: the primary metric of one output on labeled data (None values without labels)."""
    task = task_of(summary)
    if task is None:
        return {"metric": None, "value": None}
    return {"metric": PRIMARY[task], "value": Predictions(task, out, y, summary).primary()}
