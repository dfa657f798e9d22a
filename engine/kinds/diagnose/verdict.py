"""The verdict from the evidence, by the documented thresholds of DiagnoseParams.

Never wrong on a clear case: `good_fit` needs positive evidence (the validation gain over the naive baseline reaches
`good_fit_gain`, and nothing says underfit), not only the absence of a gap; a split smaller than `min_samples`
makes the verdict inconclusive only when the gap's interval is too wide to decide (it straddles the overfitting
threshold), and the report says which split is small; signals that conflict give `inconclusive` with the reason."""

from __future__ import annotations

from typing import Any

from engine.kinds.diagnose.learning_curve import LearningCurve
from engine.kinds.diagnose.models import DiagnoseParams, Evidence, Gap, SplitResult, Verdict
from engine.measure.curves import HistoryAnalysis
from engine.measure.stats import gain


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


class _Notes:
    """The evidence as it is found, and what each piece points to."""

    def __init__(self) -> None:
        self.items: list[Evidence] = []

    def __call__(self, code: str, points_to: str, text: str) -> None:
        self.items.append(Evidence(code=code, points_to=points_to, text=text))


def decide(
    task: str,
    primary: str,
    splits: dict[str, SplitResult],
    gap: Gap | None,
    history: HistoryAnalysis | None,
    weights: list[dict[str, Any]] | None,
    p: DiagnoseParams,
    identical: bool,
    curve: LearningCurve | None = None,
) -> tuple[Verdict, str, list[Evidence]]:
    """The verdict, a one-line summary and the evidence, by the documented thresholds of DiagnoseParams."""
    note = _Notes()
    tr, va = splits["train"], splits["validation"]
    if identical:
        note("same_data", "inconclusive", "train and validation are the same data")
    onset = history is not None and history.overfit_onset_epoch is not None
    risen = onset and (history.val_loss_rise or 0.0) >= p.history_overfit_rise  # type: ignore[union-attr]
    onset = onset or (curve is not None and curve.reading == "high_variance")  # the curves show overfitting
    overfit, straddle = _gap_evidence(note, tr, va, gap, p, onset, risen)
    underfit = _gain_evidence(note, task, primary, tr, va, p)
    slow = _history_evidence(note, history, tr)
    retrained = _curve_evidence(note, curve, primary, va, p)
    _weights_evidence(note, weights)
    too_wide = _sample_size_evidence(note, splits, gap, p)
    fits = va.gain is not None and va.gain >= p.good_fit_gain
    # the history's signal says underfit only where the gains do not say the model fits: poor on validation and
    # on train (a model that fits train fully while its losses still fall is not underfit)
    poor_train = tr.gain is None or tr.gain < p.good_fit_gain
    underfit = underfit or ((slow or retrained) and not fits and poor_train)
    verdict = _verdict(note, too_wide or identical, overfit, underfit, straddle, slow, fits, va, p)
    return verdict, _summary(verdict, primary, tr, va, gap, note.items), note.items


def _sample_size_evidence(note: _Notes, splits: dict[str, SplitResult], gap: Gap | None, p: DiagnoseParams) -> bool:
    """A split under min_samples: the gap's interval decides whether it can be read (True: too wide to decide)."""
    small = [r for r in ("train", "validation") if splits[r].samples < p.min_samples]
    if not small:
        return False
    who = " and ".join(f"{r} has {splits[r].samples} samples" for r in small)
    ci = gap.relative_ci95 if gap is not None else None
    if ci is None:
        note("too_few_samples", "inconclusive", f"{who}, fewer than {p.min_samples}, and the gap has no interval")
        return True
    lo, hi, threshold = ci[0], ci[1], p.overfit_relative_gap
    where = f"the gap's 95% interval ({pct(lo)} to {pct(hi)})"
    degenerate = [r for r in small if (c := splits[r].primary_ci95) is None or c[0] == c[1]]
    if degenerate:  # every resample of a small split scores the same (e.g. 15 of 15 right): the bootstrap says nothing
        note(
            "too_few_samples",
            "inconclusive",
            f"{who}, fewer than {p.min_samples}, and every bootstrap resample of {' and '.join(degenerate)} scores "
            "the same: its interval is no measure of its uncertainty",
        )
        return True
    if lo < threshold <= hi:
        note(
            "too_few_samples",
            "inconclusive",
            f"{who}, fewer than {p.min_samples}: {where} straddles the {pct(threshold)} threshold, too wide to decide",
        )
        return True
    side = "above" if lo >= threshold else "below"
    note(
        "few_samples_narrow_interval",
        "none",
        f"{who}, fewer than {p.min_samples}, but {where} lies wholly {side} the {pct(threshold)} threshold: the "
        "intervals decide",
    )
    return False


def _gap_evidence(
    note: _Notes, tr: SplitResult, va: SplitResult, gap: Gap | None, p: DiagnoseParams, onset: bool, risen: bool
) -> tuple[bool, bool]:
    """What the train/validation gap says, with the history: (overfit, inconclusive). `onset`: the validation loss
    turned up while the train loss fell; `risen`: and it ended history_overfit_rise above its minimum."""
    overfit = straddle = False
    learned = tr.gain is None or tr.gain > p.underfit_train_gain  # a gap means overfitting only if train was fit
    metric = gap.metric if gap is not None else ""
    if gap is not None and gap.relative is not None and not learned:
        note(
            "gap_of_an_unfit_model",
            "none",
            f"{metric} is {num(tr.metrics.get(metric))} on train and {num(va.metrics.get(metric))} on "
            f"validation: the model fits too little of train (gain {pct(tr.gain)}) for the gap to mean "
            "overfitting",
        )
    elif gap is not None and gap.relative is not None:
        lo, hi = (gap.relative_ci95[0], gap.relative_ci95[1]) if gap.relative_ci95 else (None, None)
        moves = "rises" if gap.lower_is_better else "falls"
        share = " of the naive baseline's" if gap.lower_is_better else ""
        text = (
            f"{metric} {moves} from {num(tr.metrics.get(metric))} on train to {num(va.metrics.get(metric))} on "
            f"validation: a relative gap of {pct(gap.relative)}{share}"
            + (f" (95% interval {pct(lo)} to {pct(hi)})" if lo is not None else "")
            + (f", p = {gap.p_value:.2g}" if gap.p_value is not None else "")
        )
        if gap.relative >= p.overfit_relative_gap and lo is not None and lo > 0:
            overfit = True
            note(
                "significant_gap",
                "overfit",
                text + f"; at or above the {pct(p.overfit_relative_gap)} threshold and significant",
            )
        elif gap.relative >= p.overfit_relative_gap:
            straddle = True
            note("gap_not_significant", "inconclusive", text + "; above the threshold but the interval includes 0")
        elif lo is not None and hi is not None and lo > 0 and hi >= p.overfit_relative_gap and onset:
            overfit = True  # a significant gap that may reach the threshold, and the curves show overfitting
            note(
                "significant_gap_and_onset",
                "overfit",
                text + f"; significant, its interval reaches the {pct(p.overfit_relative_gap)} threshold, "
                "and the learning curves show overfitting (the history's onset, or the data-size curve's high "
                "variance)",
            )
        elif lo is not None and lo > 0 and risen:
            overfit = True  # overfitting the history shows, confirmed by a measurable gap in the uploaded model
            note(
                "significant_gap_and_history_overfit",
                "overfit",
                text + "; below the threshold but significant, and the validation loss has risen "
                f"{pct(p.history_overfit_rise)} or more past its minimum while the train loss fell: the model "
                "was trained past its best epoch",
            )
        elif risen:
            straddle = True
            note(
                "history_overfit_no_gap",
                "inconclusive",
                text + "; the history shows overfitting (validation loss rising past its minimum) but the uploaded "
                "model shows no significant gap: were the best epoch's weights restored?",
            )
        elif lo is not None and hi is not None and lo < p.overfit_relative_gap <= hi:
            straddle = True
            note(
                "gap_straddles_threshold",
                "inconclusive",
                text + f"; the interval straddles the {pct(p.overfit_relative_gap)} threshold",
            )
        else:
            note("small_gap", "good_fit", text + f"; below the {pct(p.overfit_relative_gap)} threshold")
    return overfit, straddle


def _gain_evidence(note: _Notes, task: str, primary: str, tr: SplitResult, va: SplitResult, p: DiagnoseParams) -> bool:
    """What the gain over the naive baseline and the train target say: underfit or not."""
    underfit = False
    if va.gain is not None and tr.gain is not None:
        text = (
            f"gain over the naive baseline ({'most frequent class' if task == 'classification' else 'the mean'}): "
            f"{pct(tr.gain)} on train, {pct(va.gain)} on validation"
        )
        if va.gain <= p.underfit_gain and tr.gain <= p.underfit_train_gain:
            underfit = True
            note(
                "no_gain_over_baseline",
                "underfit",
                text + f" (at most {pct(p.underfit_gain)} / {pct(p.underfit_train_gain)}): poor on both",
            )
        else:
            note("gain_over_baseline", "none", text)
    if p.train_target is not None and tr.metrics.get(primary) is not None and tr.metrics[primary] < p.train_target:  # type: ignore[operator]
        underfit = True
        note(
            "below_train_target",
            "underfit",
            f"{primary} on train {num(tr.metrics[primary])} is below the target {p.train_target}",
        )
    return underfit


def _history_evidence(note: _Notes, history: HistoryAnalysis | None, tr: SplitResult) -> bool:
    """What the training history says; True when it says the model has not fit yet (still improving, or flat low)."""
    if history is None:
        return False
    if history.overfit_onset_epoch is not None:
        rise = f" (it ends {pct(history.val_loss_rise)} above its minimum)" if history.val_loss_rise else ""
        note(
            "history_onset",
            "overfit",
            f"validation loss is lowest at epoch {history.overfit_onset_epoch} of {history.epochs} and "
            f"rises afterwards{rise} while training loss keeps falling",
        )
    if history.still_improving:
        note(
            "history_still_improving",
            "underfit",
            "training and validation loss are both still falling at the last epoch "
            f"({history.epochs}): more epochs would help",
        )
    low = history.plateaued and tr.gain is not None and tr.gain <= 0.5
    if low:
        note(
            "history_plateau_low",
            "underfit",
            "both losses have flattened while train performance is low: more capacity or better "
            "features, not more epochs",
        )
    return bool(history.still_improving or low)


def _curve_evidence(
    note: _Notes, curve: LearningCurve | None, primary: str, va: SplitResult, p: DiagnoseParams
) -> bool:
    """What the data-size learning curve says; True when it says the uploaded model has not fit: re-trained, the
    same architecture does far better on validation than the uploaded weights (they are under-trained). High bias
    (train stays poor even re-trained) is reported but never decides: it looks the same as a task whose noise
    limits every model (a correct fit of data with heavy-tailed noise)."""
    if curve is None:
        return False
    last = curve.points[-1]
    note("learning_curve", "none", f"data-size learning curve, {curve.method}: {curve.text}")
    under = False
    if curve.reading == "high_bias":
        text = "the architecture re-trained from scratch stays poor on its own training data: high bias (capacity or "
        note("curve_high_bias", "none", text + "features, not data), unless the task's noise limits every model")
    uploaded = va.metrics.get(primary)
    retrained_gain = gain(last.validation, va.baseline_metrics.get(primary))
    half = last.half_width()
    lead = last.validation - uploaded if last.validation is not None and uploaded is not None else None
    if (
        lead is not None
        and half is not None
        and retrained_gain is not None
        and retrained_gain >= p.good_fit_gain > (va.gain or 0.0)
        and lead > half
    ):
        under = True
        note(
            "curve_undertrained",
            "underfit",
            f"re-trained on the same train split, the same architecture reaches {primary} {num(last.validation)} "
            f"on validation (gain {pct(retrained_gain)}); the uploaded weights reach {num(uploaded)} (gain "
            f"{pct(va.gain)}): they are under-trained (recipe: {curve.recipe['learning_rate']} learning rate, "
            f"{curve.recipe['epochs_at_full_size']} epochs)",
        )
    earlier = curve.earlier
    if curve.validation_rising and earlier is not None:
        note(
            "curve_more_data",
            "overfit" if curve.reading == "high_variance" else "none",
            f"validation {primary} still rises from {num(earlier.validation)} at {earlier.samples} to "
            f"{num(last.validation)} at {last.samples} training samples: more data would help"
            + (" (high variance: a gap that data closes)" if curve.reading == "high_variance" else ""),
        )
    return under


def _weights_evidence(note: _Notes, weights: list[dict[str, Any]] | None) -> None:
    for w in weights or []:
        if w.get("flag"):
            note(
                "weights_alpha",
                "overfit" if w["alpha"] < 2 else "underfit",
                f"layer {w['layer']}: spectral alpha {w['alpha']:.2f} ({w['flag']}; supporting evidence only)",
            )


def _verdict(
    note: _Notes,
    undecidable: bool,
    overfit: bool,
    underfit: bool,
    straddle: bool,
    slow: bool,
    fits: bool,
    va: SplitResult,
    p: DiagnoseParams,
) -> Verdict:
    """`slow`: the history says the model has not fit yet; `fits`: the validation gain reaches good_fit_gain."""
    if undecidable:
        return "inconclusive"
    if overfit and underfit:
        note("conflict", "inconclusive", "signals conflict: a significant gap and signs of underfitting")
        return "inconclusive"
    if overfit:
        return "overfit"
    if underfit:
        return "underfit"
    if straddle:
        return "inconclusive"
    if slow:
        note(
            "fits_but_still_learning",
            "inconclusive",
            f"the validation gain ({pct(va.gain)}) says the model fits, the history says it is still learning: "
            "train longer and diagnose again",
        )
        return "inconclusive"
    if not fits:
        note(
            "gain_below_good_fit",
            "inconclusive",
            f"no gap and no sign of underfitting, but the validation gain over the naive baseline ({pct(va.gain)}) "
            f"is below the {pct(p.good_fit_gain)} a good fit needs",
        )
        return "inconclusive"
    note(
        "good_fit_gain",
        "good_fit",
        f"validation gains {pct(va.gain)} of the way from the naive baseline to perfect, at or above the "
        f"{pct(p.good_fit_gain)} a good fit needs",
    )
    return "good_fit"


def _summary(
    verdict: Verdict, primary: str, tr: SplitResult, va: SplitResult, gap: Gap | None, ev: list[Evidence]
) -> str:
    rel = pct(gap.relative if gap else None)
    loss = gap is not None and gap.lower_is_better
    of_baseline = " (a share of the naive baseline's RMSE)" if loss else ""
    summaries = {
        "overfit": f"Overfit: {gap.metric if gap else primary} is {rel} "
        f"{'higher' if loss else 'lower'} on validation than on train{of_baseline}, beyond what chance explains.",
        "underfit": f"Underfit: the model gains only {pct(va.gain)} over a naive baseline on validation "
        f"({pct(tr.gain)} on train).",
        "good_fit": f"Good fit: {primary} {num(va.metrics.get(primary))} on validation, a gap of {rel} on "
        f"{gap.metric if gap else primary}, "
        f"{pct(va.gain)} of the way from the naive baseline to perfect.",
        "inconclusive": "Inconclusive: " + "; ".join(e.text for e in ev if e.points_to == "inconclusive")[:400] + ".",
    }
    return summaries[verdict]
