"""Statistics for fit diagnostics, free of ONNX: metrics, naive baselines, bootstrap intervals of the
generalization gap, learning-curve analysis and the heavy-tailed spectral fit of weight matrices.

Everything here takes numpy arrays and returns plain data, so the `diagnose` job (engine/diagnose.py) and
the distillation job's own learning curves can share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

ECE_BINS = 15
MINIMIZE_HINTS = ("loss", "error", "mse", "mae", "rmse", "perplexity")


# -- metrics --------------------------------------------------------------------------------------------------
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
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def classification_report(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    n_classes = probs.shape[1]
    recall, f1s = {}, []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        if tp + fn:
            recall[str(c)] = tp / (tp + fn)
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    metrics: dict[str, Any] = {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "log_loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)))),
        "ece": expected_calibration_error(probs, y),
    }
    if n_classes == 2:
        metrics["roc_auc"] = roc_auc(probs[:, 1], y == 1)
    return {"metrics": metrics, "per_class_recall": recall}


def regression_report(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    err = pred - y
    ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
    mse = float((err**2).mean())
    return {
        "metrics": {
            "mse": mse,
            "rmse": math.sqrt(mse),
            "mae": float(np.abs(err).mean()),
            "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
        },
        "per_class_recall": None,
    }


def metric_fn(task: str, metric: str, out: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], float | None]:
    """metric(sample indices) for the bootstrap; `out` is probabilities (classification) or predictions."""
    if task == "classification":
        pred = out.argmax(axis=1)
        if metric == "accuracy":
            correct = (pred == y).astype(np.float64)
            return lambda idx: float(correct[idx].mean())
        if metric == "roc_auc":
            return lambda idx: roc_auc(out[idx, 1], y[idx] == 1)
        return lambda idx: classification_report(out[idx], y[idx])["metrics"][metric]
    return lambda idx: regression_report(out[idx], y[idx])["metrics"][metric]


# -- baselines and gaps ---------------------------------------------------------------------------------------
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
) -> dict[str, Any]:
    """Percentile intervals of train, validation, absolute gap and relative gap; the two splits are resampled
    independently (they are independent samples). Seeded: the same inputs give the same interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(resamples):
        a = train(rng.integers(0, n_train, n_train))
        b = val(rng.integers(0, n_val, n_val))
        if a is None or b is None:
            continue
        rows.append((a, b, a - b, (a - b) / abs(a) if a else np.nan))
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


# -- learning curves ------------------------------------------------------------------------------------------
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


def early_stopping(values: list[float], mode_min: bool, min_delta: float, patience: int) -> dict[str, Any]:
    """Keras EarlyStopping replayed on a recorded curve: an epoch improves when it beats the best so far by more
    than min_delta; training stops after `patience` epochs without improvement and restores the best weights.
    Returns the overall best epoch, the stop epoch (None if it never stops) and the epoch it would restore.
    Epochs are 1-based."""
    best, best_epoch, wait, stopped, restored = None, None, 0, None, None
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        better = best is None or (v < best - min_delta if mode_min else v > best + min_delta)
        if better:
            best, best_epoch, wait = v, i + 1, 0
        else:
            wait += 1
            if wait >= patience and stopped is None:
                stopped, restored = i + 1, best_epoch
    return {"best_epoch": best_epoch, "best_value": best, "stopped_epoch": stopped, "restored_epoch": restored}


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


# -- weights: heavy-tailed self-regularization (WeightWatcher's alpha) ---------------------------------------
def power_law_alpha(eigs: np.ndarray, min_tail: int = 10) -> dict[str, float] | None:
    """Continuous power-law fit of the eigenvalue tail (Clauset et al.): alpha by maximum likelihood for each
    candidate x_min, x_min chosen by the smallest Kolmogorov-Smirnov distance. None when the fit cannot be made."""
    x = np.sort(eigs[eigs > eigs.max() * 1e-12])
    if x.size < 2 * min_tail:
        return None
    best = None
    for k in range(0, x.size - min_tail):
        xmin = x[k]
        tail = x[k:]
        logs = np.log(tail / xmin)
        if logs.sum() <= 0:
            continue
        alpha = 1.0 + tail.size / logs.sum()
        empirical = np.arange(tail.size) / tail.size
        model = 1.0 - (tail / xmin) ** (1.0 - alpha)
        ks = float(np.abs(empirical - model).max())
        if best is None or ks < best["ks_distance"]:
            best = {"alpha": float(alpha), "xmin": float(xmin), "ks_distance": ks, "tail_size": int(tail.size)}
    return best


def weight_matrix(array: np.ndarray) -> np.ndarray | None:
    """A 2-D view of a weight: matrices as they are, conv kernels [out, in, kh, kw] as [out, in*kh*kw].

    (WeightWatcher fits each of the kh*kw [out, in] slices instead; one matrix per layer is simpler to read.)"""
    if array.ndim == 2:
        return array
    if array.ndim >= 3:
        return array.reshape(array.shape[0], -1)
    return None


def esd_alpha(array: np.ndarray, min_dim: int = 32) -> dict[str, Any]:
    w = weight_matrix(np.asarray(array, dtype=np.float64))
    if w is None:
        return {"status": "skipped", "reason": "not a matrix"}
    if min(w.shape) < min_dim:
        return {"status": "skipped", "reason": f"too small for a spectral fit ({list(w.shape)}, needs >= {min_dim})"}
    n = max(w.shape)
    singular = np.linalg.svd(w, compute_uv=False)
    eigs = singular**2 / n  # the empirical spectral density of W^T W / N
    fit = power_law_alpha(eigs)
    if fit is None:
        return {"status": "failed", "reason": "the spectrum has too few non-zero eigenvalues"}
    return {"status": "fitted", "shape": list(w.shape), **fit}
