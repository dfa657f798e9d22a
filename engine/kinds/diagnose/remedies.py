"""Ranked remedies with concrete settings for what the evidence shows."""

from __future__ import annotations

import math

from engine.inspect import ModelInfo
from engine.kinds.diagnose.learning_curve import LearningCurve
from engine.kinds.diagnose.models import DiagnoseParams, Evidence, Gap, Remedy, SplitResult, Verdict
from engine.kinds.diagnose.verdict import num, pct
from engine.measure.curves import HistoryAnalysis, minimize


def suggest(
    verdict: Verdict,
    primary: str,
    splits: dict[str, SplitResult],
    gap: Gap | None,
    history: HistoryAnalysis | None,
    evidence: list[Evidence],
    info: ModelInfo,
    p: DiagnoseParams,
    hidden: list[str] | None = None,
    curve: LearningCurve | None = None,
) -> list[Remedy]:
    """Remedies for the verdict, most direct first: early stopping at a named epoch, regularization, data,
    capacity, epochs, features, a larger validation set. Each names the evidence items (codes) that support it."""
    out: list[Remedy] = []
    codes = {e.code for e in evidence}
    if (verdict == "overfit" or "history_onset" in codes) and history and history.monitor and history.best_epoch:
        out.append(_cite(_early_stopping(history), codes, "history_onset", *GAP_CODES))
    if verdict == "overfit":
        out += [_cite(r, codes, *GAP_CODES) for r in _against_overfitting(primary, splits, gap, hidden, curve)]
    elif curve is not None and curve.validation_rising:
        out.append(_cite(_more_data_measured(curve, splits), codes))
    if history is not None and history.still_improving:
        out.append(_cite(_more_epochs(history), codes, "history_still_improving"))
    if "curve_undertrained" in codes and curve is not None:
        out.append(_cite(_retrain(curve), codes, "curve_undertrained"))
    # capacity and features only when the evidence is about the model's reach: not when re-training the same
    # architecture showed that it fits (its weights are merely under-trained)
    if verdict == "underfit" and codes & set(CAPACITY_CODES) and "curve_undertrained" not in codes:
        out += [_cite(r, codes, *CAPACITY_CODES) for r in _against_underfitting(splits, info)]
    if verdict == "inconclusive" and gap is not None:
        out.append(_cite(_larger_validation(primary, splits), codes, *UNDECIDED_CODES))
    return out


GAP_CODES = ("significant_gap", "significant_gap_and_onset", "significant_gap_and_history_overfit")
CAPACITY_CODES = ("no_gain_over_baseline", "below_train_target", "history_plateau_low", "curve_high_bias")
UNDECIDED_CODES = ("gap_straddles_threshold", "gap_not_significant", "too_few_samples", "history_overfit_no_gap")


def _cite(remedy: Remedy, codes: set[str], *wanted: str) -> Remedy:
    """The remedy with the codes of the evidence found that supports it (its own, e.g. curve_more_data, kept)."""
    remedy.evidence = [c for c in dict.fromkeys([*remedy.evidence, *wanted]) if c in codes]
    return remedy


def _more_data_measured(curve: LearningCurve, splits: dict[str, SplitResult]) -> Remedy:
    prev, last = curve.earlier or curve.points[0], curve.points[-1]
    return Remedy(
        action="more training data",
        why=f"measured: re-trained on {prev.samples} and {last.samples} samples, the architecture's validation "
        f"{curve.metric} rose from {num(prev.validation)} to {num(last.validation)} (the data-size learning curve)",
        setting={
            "train_samples_now": splits["train"].samples,
            "validation_by_train_samples": _by_size(curve),
        },
        evidence=["curve_more_data"],
    )


def _by_size(curve: LearningCurve) -> dict[int, float | None]:
    return {pt.samples: None if pt.validation is None else round(pt.validation, 4) for pt in curve.points}


def _retrain(curve: LearningCurve) -> Remedy:
    return Remedy(
        action="re-train with the recipe the learning curve found",
        why="the same architecture re-trained on the same data does far better on validation than the uploaded weights",
        setting={k: curve.recipe[k] for k in ("optimizer", "learning_rate", "epochs_at_full_size", "batch_size")},
    )


def _early_stopping(history: HistoryAnalysis) -> Remedy:
    assert history.monitor is not None and history.best_epoch is not None
    mode = "min" if minimize(history.monitor) else "max"
    stop_at = history.stopped_epoch or history.epochs
    keep = history.restored_epoch or history.best_epoch
    when = (
        f"training would have stopped at epoch {stop_at} and kept epoch {keep}"
        if history.stopped_epoch
        else f"training would have run all {history.epochs} epochs and kept epoch {keep}"
    )
    return Remedy(
        action=f"early stopping: keep the weights of epoch {keep}",
        why=f"{history.monitor} is best at epoch {history.best_epoch} of {history.epochs}; with patience "
        f"{history.patience} {when}",
        setting={
            "monitor": history.monitor,
            "mode": mode,
            "min_delta": history.min_delta,
            "patience": history.patience,
            "best_epoch": history.best_epoch,
            "stop_epoch": stop_at,
            "restored_epoch": keep,
        },
        code=f"EarlyStopping(monitor={history.monitor!r}, min_delta={history.min_delta}, "
        f"patience={history.patience}, restore_best_weights=True)",
    )


def _against_overfitting(
    primary: str,
    splits: dict[str, SplitResult],
    gap: Gap | None,
    hidden: list[str] | None,
    curve: LearningCurve | None,
) -> list[Remedy]:
    out: list[Remedy] = []
    n_train = splits["train"].samples
    out.append(
        Remedy(
            action="L2 weight decay (or L1 for sparse weights)",
            why="a significant train/validation gap: the model fits noise of the training set",
            setting={
                "weight_decay": [1e-4, 1e-2],
                "l1": [1e-6, 1e-4],
                "note": "start low, raise until the gap closes",
            },
        )
    )
    out.append(
        Remedy(
            action="dropout after the hidden layers",
            why="a significant train/validation gap",
            setting={
                "rate": [0.2, 0.5],
                "where": "after each hidden fully-connected layer (0.1-0.2 after convolutions)",
                "layers": hidden or None,
            },
        )
    )
    if curve is not None and curve.validation_rising:
        out.append(_more_data_measured(curve, splits))
    elif curve is not None:
        out.append(
            Remedy(
                action="more training data will help little",
                why=f"measured: re-trained on growing shares of train, the architecture's validation {curve.metric} "
                f"is flat ({curve.text})",
                setting={"validation_by_train_samples": _by_size(curve)},
                evidence=["learning_curve"],
            )
        )
    elif gap is not None and gap.absolute > 0:
        out.append(
            Remedy(
                action="more training data",
                why=f"the gap ({num(gap.absolute)} in {gap.metric}) typically shrinks like 1/sqrt(n): a rule of "
                "thumb, not a measurement",
                setting={
                    "train_samples_now": n_train,
                    "to_halve_the_gap": 4 * n_train,
                    "augmentation": "counts too",
                },
            )
        )
    out.append(
        Remedy(
            action="reduce capacity (fewer units or channels)",
            why="a model much larger than the data needs memorizes it",
            setting={
                "width_factor": 0.5,
                "next_step": "structured pruning + distillation (onnxsmith prune/distill jobs, planned)",
            },
        )
    )
    return out


def _more_epochs(history: HistoryAnalysis) -> Remedy:
    return Remedy(
        action="train for more epochs",
        why=f"both losses still fall at epoch {history.epochs}",
        setting={
            "epochs": [history.epochs * 2, history.epochs * 3],
            "with": "early stopping on the validation loss",
        },
    )


def _against_underfitting(splits: dict[str, SplitResult], info: ModelInfo) -> list[Remedy]:
    out: list[Remedy] = []
    out.append(
        Remedy(
            action="more capacity (wider or deeper)",
            why=f"the model gains only {pct(splits['validation'].gain)} over a naive baseline, on train too",
            setting={"width_factor": [2, 4], "or": "one more hidden layer"},
        )
    )
    tabular = len(info.inputs) == 1 and len(info.inputs[0].shape or []) == 2
    width = (info.inputs[0].shape or [None, None])[1] if tabular else None
    out.append(
        Remedy(
            action="more or better features",
            why="a model that cannot beat the baseline on its own training data may lack the information",
            setting={"polynomial_degree": 2, "interactions": True, "input_features": width}
            if tabular and isinstance(width, int) and width <= 50
            else {"note": "add informative inputs; check the inputs are scaled"},
        )
    )
    out.append(
        Remedy(
            action="less regularization",
            why="under-fitting models are often held back by weight decay or dropout",
            setting={"weight_decay": "divide by 10", "dropout": "lower or remove"},
        )
    )
    return out


def _larger_validation(primary: str, splits: dict[str, SplitResult]) -> Remedy:
    n_val = splits["validation"].samples
    acc = splits["validation"].metrics.get(primary) or 0.5
    half = 0.025 * max(abs(splits["train"].metrics.get(primary) or 1.0), 1e-9)
    needed = math.ceil(1.96**2 * max(acc * (1 - acc), 0.01) / half**2) if primary == "accuracy" else None
    return Remedy(
        action="a larger validation set",
        why=f"the {primary} interval on {n_val} validation samples is too wide to decide",
        setting={"validation_samples_now": n_val, "for_2.5pt_half_width": needed}
        if needed
        else {"validation_samples_now": n_val},
    )
