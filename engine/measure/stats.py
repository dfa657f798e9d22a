"""Statistics shared by the kinds: naive baselines and the gain over them, bootstrap intervals of one metric and
of the gap between two independent splits, the two-proportion z-test. numpy in, plain data out."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def baseline_outputs(task: str, y_train: np.ndarray, n: int, n_classes: int | None) -> np.ndarray:
    """The naive model fitted on train: the most frequent class (as a one-hot probability) or the mean."""
    if task == "classification":
        assert n_classes is not None
        counts = np.bincount(y_train, minlength=n_classes)
        probs = np.zeros((n, n_classes))
        probs[:, int(counts.argmax())] = 1.0
        return probs
    return np.broadcast_to(y_train.mean(axis=0), (n, *y_train.shape[1:])).astype(np.float64)


def gain(model: float | None, baseline: float | None, perfect: float = 1.0) -> float | None:
    """Deepchecks' gain over the naive model: (model - baseline) / (perfect - baseline)."""
    if model is None or baseline is None or perfect == baseline:
        return None
    return (model - baseline) / (perfect - baseline)


def bootstrap_gap(
    train: Callable[[np.ndarray], float | None],
    val: Callable[[np.ndarray], float | None],
    n_train: int,
    n_val: int,
    resamples: int,
    seed: int,
    lower_is_better: bool = False,
    scale: float | None = None,
) -> dict[str, Any]:
    """Percentile intervals of train, validation, absolute gap and relative gap; the two splits are resampled
    independently (they are independent samples). Seeded: the same inputs give the same interval. The gap is how
    much worse validation is: train - validation for a score, validation - train for a loss (`lower_is_better`);
    relative to `scale` when given (a fixed yardstick, e.g. the naive baseline's loss), else to train's score
    (a score) or validation's loss (a loss: bounded by 1, and meaningful however large the loss grows)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(resamples):
        a = train(rng.integers(0, n_train, n_train))
        b = val(rng.integers(0, n_val, n_val))
        if a is None or b is None:
            continue
        worse, base = (b - a, b) if lower_is_better else (a - b, a)
        base = scale if scale is not None else base
        rows.append((a, b, worse, worse / abs(base) if base else np.nan))
    if len(rows) < resamples // 2:
        return {"resamples": len(rows)}
    arr = np.asarray(rows, dtype=np.float64)

    def ci(col: int) -> list[float] | None:
        values = arr[:, col][np.isfinite(arr[:, col])]
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values.size else None

    return {"resamples": len(rows), "train": ci(0), "validation": ci(1), "absolute": ci(2), "relative": ci(3)}


def bootstrap_ci(metric: Callable[[np.ndarray], float | None], n: int, resamples: int, seed: int) -> list[float] | None:
    """Percentile 95% interval of one metric over bootstrap resamples of one split."""
    rng = np.random.default_rng(seed)
    values = [v for v in (metric(rng.integers(0, n, n)) for _ in range(resamples)) if v is not None]
    if len(values) < resamples // 2:
        return None
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def two_proportion_p(acc_a: float, n_a: int, acc_b: float, n_b: int) -> float | None:
    """Two-sided p-value of the two-proportion z-test (pooled), for accuracies on independent samples."""
    pooled = (acc_a * n_a + acc_b * n_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0 if acc_a == acc_b else 0.0
    z = (acc_a - acc_b) / se
    return math.erfc(abs(z) / math.sqrt(2))
