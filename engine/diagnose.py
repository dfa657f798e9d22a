"""The `diagnose` job: does the model overfit, underfit or fit well — with the evidence and what to change.

Per split (train, validation, optional test): task metrics, a naive baseline fitted on train and the model's
gain over it (Deepchecks' formula). The generalization gap on the primary higher-is-better metric, with a
seeded bootstrap interval (train and validation resampled independently) and, for accuracy, a two-proportion
z-test. The training history (optional): best epoch by Keras' EarlyStopping rule, overfitting onset, whether
the curves still fall at the end. The weights (supporting evidence only): WeightWatcher's power-law alpha of
each layer's spectrum. Then a verdict from documented thresholds (DiagnoseParams) and ranked remedies.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, Field

from engine import binding, fit
from engine.datasets import DatasetSummary, read_history
from engine.errors import EngineError
from engine.evaluate import class_probabilities, label_indices, pick_output
from engine.inspect import ModelInfo
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import fixed_batch, make_session, run_batched

SPLITS = ("train", "validation", "test")
PRIMARY = {"classification": "accuracy", "regression": "r2"}
HIGHER_IS_BETTER = {"accuracy", "macro_f1", "roc_auc", "r2"}
WEIGHT_OPS = {"Gemm", "MatMul", "Conv"}
MAX_WEIGHT_LAYERS = 50
Verdict = Literal["overfit", "underfit", "good_fit", "inconclusive"]


class DiagnoseParams(StrictParams):
    task: Literal["classification", "regression"] | None = Field(
        default=None, description="Task hint (default: from the labels: integer/string classes or float values)"
    )
    primary_metric: Literal["accuracy", "macro_f1", "roc_auc", "r2"] | None = Field(
        default=None, description="Higher-is-better metric the gap is measured on (default accuracy / r2)"
    )
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    overfit_relative_gap: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description="Overfit when (train - val) / |train| reaches this and its interval excludes 0",
    )
    underfit_gain: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="Underfit when the gain over the naive baseline on validation is at most this",
    )
    underfit_train_gain: float = Field(
        default=0.25, ge=0, lt=1, description="...and the gain on train is at most this ('poor on train as well')"
    )
    train_target: float | None = Field(
        default=None, description="Underfit when the primary metric on train is below this target (e.g. 0.95)"
    )
    min_samples: int = Field(default=30, ge=2, description="Fewer samples in a split: verdict inconclusive")
    bootstrap_resamples: int = Field(default=1000, ge=100, le=20000)
    seed: int = Field(default=0, description="Seed of the bootstrap (same seed and data: same interval)")
    max_samples: int | None = Field(default=20000, ge=1, description="Samples used per split")
    batch_size: int = Field(default=256, ge=1, le=65536)
    threads: int = Field(default=1, ge=1, le=64)
    monitor: str | None = Field(default=None, description="History curve for early stopping (default val_loss)")
    min_delta: float = Field(default=0.0, ge=0, description="EarlyStopping min_delta on the monitored curve")
    patience: int | None = Field(default=None, ge=1, description="EarlyStopping patience (default max(3, epochs/10))")
    weights: bool = Field(default=True, description="Spectral (power-law alpha) analysis of the weight matrices")


class SplitResult(BaseModel):
    samples: int
    metrics: dict[str, float | None]
    baseline_metrics: dict[str, float | None] = Field(description="The naive model fitted on train, on this split")
    gain: float | None = Field(description="(model - baseline) / (perfect - baseline) on the primary metric")
    primary_ci95: list[float] | None = Field(default=None, description="Bootstrap 95% interval of the primary metric")
    per_class_recall: dict[str, float] | None = None
    predicted_classes: int | None = Field(default=None, description="Distinct classes the model predicts here")


class Gap(BaseModel):
    metric: str
    absolute: float = Field(description="train - validation")
    relative: float | None = Field(description="(train - validation) / |train|")
    absolute_ci95: list[float] | None
    relative_ci95: list[float] | None
    resamples: int
    p_value: float | None = Field(default=None, description="Two-proportion z-test, train vs validation accuracy")
    test_absolute: float | None = Field(default=None, description="train - test, when a test split is given")


class Evidence(BaseModel):
    code: str
    points_to: Literal["overfit", "underfit", "good_fit", "inconclusive", "none"]
    text: str


class Remedy(BaseModel):
    action: str
    why: str = Field(description="The evidence that calls for it")
    setting: dict[str, Any] = Field(default_factory=dict, description="Concrete values where they can be derived")
    code: str | None = Field(default=None, description="Ready-to-paste code, e.g. a Keras EarlyStopping")


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
    still_improving: bool | None = Field(description="Both losses still falling over the last epochs")
    plateaued: bool | None = Field(description="Both losses flat over the last epochs")
    train_slope: float | None = Field(description="Last-window slope of the train loss (range per epoch)")
    val_slope: float | None
    values: dict[str, list[float | None]] = Field(description="The curves read (for the report's chart)")


class DiagnoseReport(ReportBase):
    kind: Literal["diagnose"] = "diagnose"
    verdict: Verdict
    summary: str = Field(description="The verdict in one sentence with its main number")
    task: Literal["classification", "regression"]
    output: str
    output_interpretation: Literal["logits", "probabilities", "values"]
    primary_metric: str
    splits: dict[str, SplitResult]
    gap: Gap | None
    evidence: list[Evidence]
    history: HistoryAnalysis | None = None
    weights: list[dict[str, Any]] | None = Field(
        default=None, description="Per weight matrix: power-law alpha of its spectrum; < 2 or > 6 is flagged"
    )
    remedies: list[Remedy]
    thresholds: dict[str, Any]


# -- validation -----------------------------------------------------------------------------------------------
def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: DiagnoseParams) -> None:
    for role in ("train", "validation", "test"):
        if role not in summaries:
            continue
        s = summaries[role]
        if s.kind != "samples":
            raise EngineError("incompatible_data", f"the {role} dataset is a training history, not samples")
        if s.label is None:
            raise EngineError("incompatible_data", f"diagnose needs labels in the {role} dataset (label=... on upload)")
        binding.plan(info.inputs, s)
    if "history" in summaries and summaries["history"].kind != "history":
        raise EngineError("incompatible_data", "datasets.history must be a training history (kind=history)")
    pick_output(info, params.output)


# -- the job --------------------------------------------------------------------------------------------------
def _digest(feeds: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(feeds):
        h.update(k.encode())
        h.update(np.ascontiguousarray(feeds[k]).tobytes())
    return h.hexdigest()


def _run_split(inputs: JobInputs, role: str, params: DiagnoseParams, session: Any, output: str, batch: int):
    feeds, y = inputs.feeds(role)
    assert y is not None
    if params.max_samples is not None:
        feeds = {k: v[: params.max_samples] for k, v in feeds.items()}
        y = y[: params.max_samples]
    out = run_batched(session, feeds, output, batch)
    return feeds, y, out


def run(inputs: JobInputs, params: DiagnoseParams, progress: Progress) -> tuple[DiagnoseReport, list[ArtifactOut]]:
    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    output = pick_output(info, params.output)
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    batch = forced or params.batch_size
    session = make_session(inputs.model_path, min(params.threads, inputs.max_threads))
    roles = [r for r in SPLITS if r in inputs.datasets]
    task = params.task or inputs.datasets["train"].summary.label.kind  # type: ignore[union-attr]
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    digests = {}
    for i, role in enumerate(roles):
        progress(0.05 + 0.5 * i / len(roles), f"running the model on {role}")
        feeds, y, out = _run_split(inputs, role, params, session, output, batch)
        if forced is not None and len(y) % forced:
            raise EngineError(
                "incompatible_data", f"{len(y)} {role} samples do not split into the model's fixed batch of {forced}"
            )
        bad = int((~np.isfinite(out.astype(np.float64))).sum())
        if bad:
            raise EngineError("invalid_output", f"the model produced {bad} NaN/inf values on the {role} data")
        raw[role] = (y, out)
        digests[role] = _digest(feeds)
    progress(0.6, "computing metrics and intervals")

    interpretation = "values"
    n_classes = None
    prepared: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # role -> (model output for metrics, labels)
    for role, (y, out) in raw.items():
        if task == "classification":
            probs, interpretation = class_probabilities(out)
            n_classes = probs.shape[1]
            summary = inputs.datasets[role].summary
            prepared[role] = (probs, label_indices(y, summary, n_classes))
        else:
            n = len(y)
            pred = out.astype(np.float64).reshape(n, -1)
            target = y.astype(np.float64).reshape(n, -1)
            if pred.shape != target.shape:
                raise EngineError(
                    "incompatible_data",
                    f"output {output!r} gives {list(pred.shape[1:])} values per sample, the {role} labels "
                    f"{list(target.shape[1:])}",
                )
            prepared[role] = (pred, target)
    primary = params.primary_metric or PRIMARY[task]
    if task == "regression" and primary != "r2":
        raise EngineError(
            "incompatible_data", f"primary_metric {primary!r} is a classification metric; regression uses r2"
        )
    if primary == "roc_auc" and n_classes != 2:
        raise EngineError("incompatible_data", "primary_metric roc_auc needs a binary classifier")

    report_fn = fit.classification_report if task == "classification" else fit.regression_report
    y_train = prepared["train"][1]
    splits: dict[str, SplitResult] = {}
    for role, (out, y) in prepared.items():
        full = report_fn(out, y)
        base = report_fn(fit.baseline_outputs(task, y_train, len(y), n_classes), y)
        metrics = {k: (None if v is None else float(v)) for k, v in full["metrics"].items()}
        predicted = int(len(np.unique(out.argmax(axis=1)))) if task == "classification" else None
        splits[role] = SplitResult(
            samples=len(y),
            metrics=metrics,
            baseline_metrics=base["metrics"],
            gain=fit.gain(metrics.get(primary), base["metrics"].get(primary)),
            per_class_recall=full["per_class_recall"],
            predicted_classes=predicted,
        )
        if task == "classification" and n_classes is not None:
            never = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
            if role == "validation" and len(never) == n_classes - 1:
                warnings.append("the validation labels hold a single class: accuracy says little")
            unseen = sorted(set(np.unique(y).tolist()) - set(np.unique(out.argmax(axis=1)).tolist()))
            if unseen:
                warnings.append(f"on {role}, the model never predicts class(es) {unseen[:20]} that occur in the labels")

    n_train, n_val = splits["train"].samples, splits["validation"].samples
    fa = fit.metric_fn(task, primary, *prepared["train"])
    fb = fit.metric_fn(task, primary, *prepared["validation"])
    boot = fit.bootstrap_gap(fa, fb, n_train, n_val, params.bootstrap_resamples, params.seed)
    splits["train"].primary_ci95 = boot.get("train")
    splits["validation"].primary_ci95 = boot.get("validation")
    if "test" in prepared:
        test_fn = fit.metric_fn(task, primary, *prepared["test"])
        splits["test"].primary_ci95 = fit.bootstrap_ci(
            test_fn, splits["test"].samples, params.bootstrap_resamples, params.seed
        )
    gap = None
    a, b = splits["train"].metrics.get(primary), splits["validation"].metrics.get(primary)
    if a is not None and b is not None:
        gap = Gap(
            metric=primary,
            absolute=a - b,
            relative=(a - b) / abs(a) if a else None,
            absolute_ci95=boot.get("absolute"),
            relative_ci95=boot.get("relative"),
            resamples=boot["resamples"],
            p_value=fit.two_proportion_p(a, n_train, b, n_val) if primary == "accuracy" else None,
        )
        if "test" in splits and splits["test"].metrics.get(primary) is not None:
            gap.test_absolute = a - splits["test"].metrics[primary]  # type: ignore[operator]

    identical = digests.get("train") == digests.get("validation")
    if identical:
        warnings.append("the train and validation datasets hold the same inputs: the gap is meaningless")
    history = None
    if "history" in inputs.datasets:
        progress(0.7, "reading the training history")
        ds = inputs.datasets["history"]
        curves, _ = read_history(Path(ds.path), ds.format)  # type: ignore[arg-type]
        history = analyse_history(curves, params, warnings)
    weights = None
    if params.weights:
        progress(0.8, "fitting the spectra of the weights")
        weights = weight_alphas(Path(inputs.model_path))

    progress(0.9, "deciding")
    verdict, summary, evidence = decide(task, primary, splits, gap, history, weights, params, identical)
    hidden = hidden_layers(Path(inputs.model_path))
    remedies = suggest(verdict, primary, splits, gap, history, evidence, info, params, hidden)
    machine.load_average_1m_after = load_average()
    report = DiagnoseReport(
        warnings=warnings,
        machine=machine,
        verdict=verdict,
        summary=summary,
        task=task,
        output=output,
        output_interpretation=interpretation,  # type: ignore[arg-type]
        primary_metric=primary,
        splits=splits,
        gap=gap,
        evidence=evidence,
        history=history,
        weights=weights,
        remedies=remedies,
        thresholds={
            "overfit_relative_gap": params.overfit_relative_gap,
            "underfit_gain": params.underfit_gain,
            "underfit_train_gain": params.underfit_train_gain,
            "train_target": params.train_target,
            "min_samples": params.min_samples,
            "confidence": 0.95,
            "bootstrap_resamples": params.bootstrap_resamples,
            "seed": params.seed,
        },
    )
    return report, []


# -- history --------------------------------------------------------------------------------------------------
def analyse_history(curves: dict[str, list[float]], params: DiagnoseParams, warnings: list[str]) -> HistoryAnalysis:
    names = fit.find_curves(curves)
    epochs = len(next(iter(curves.values())))
    monitor = params.monitor or names["val_loss"] or names["val_score"]
    if params.monitor and params.monitor not in curves:
        raise EngineError("incompatible_data", f"monitor {params.monitor!r} is not in the history: {sorted(curves)}")
    if names["val_loss"] is None and names["val_score"] is None:
        warnings.append(
            "the history has no validation column (val_loss, val_accuracy, ...): the best epoch and the overfitting "
            "onset cannot be found"
        )
    patience = params.patience or max(3, epochs // 10)
    stop = {"best_epoch": None, "stopped_epoch": None, "restored_epoch": None}
    if monitor is not None:
        stop = fit.early_stopping(curves[monitor], fit.minimize(monitor), params.min_delta, patience)
    window = max(3, epochs // 5)
    tl, vl = names["train_loss"], names["val_loss"]
    train_slope = fit.trend(curves[tl], window) if tl else None
    val_slope = fit.trend(curves[vl], window) if vl else None
    onset = None
    if tl and vl:
        val = curves[vl]
        best_val = fit.early_stopping(val, True, params.min_delta, epochs + 1)["best_epoch"]
        if best_val is not None and best_val < epochs:
            train = curves[tl]
            t_best, t_end = train[best_val - 1], _last_finite(train)
            v_best, v_end = val[best_val - 1], _last_finite(val)
            span = _span(val)
            if (
                t_end is not None
                and v_end is not None
                and t_end < t_best
                and v_end > v_best + max(params.min_delta, 0.02 * span)
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
        min_delta=params.min_delta,
        overfit_onset_epoch=onset,
        still_improving=still,
        plateaued=flat,
        train_slope=train_slope,
        val_slope=val_slope,
        values=values,
    )


def _last_finite(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return finite[-1] if finite else None


def _span(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return (max(finite) - min(finite)) if finite else 0.0


def hidden_layers(path: Path) -> list[str]:
    """Gemm/MatMul/Conv nodes with a weight initializer, except the last one (the output layer): where dropout goes."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in WEIGHT_OPS and any(i in inits for i in n.input[1:2])]
    return [n.name or n.output[0] for n in weighted[:-1]][:20]


# -- weights --------------------------------------------------------------------------------------------------
def weight_alphas(path: Path) -> list[dict[str, Any]]:
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    rows = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for name in node.input[:2]:
            if name in inits and len(rows) < MAX_WEIGHT_LAYERS:
                array = numpy_helper.to_array(inits[name])
                if array.dtype.kind != "f" or array.ndim < 2:
                    continue
                result = fit.esd_alpha(array)
                if result["status"] == "fitted":
                    a = result["alpha"]
                    result["flag"] = "possibly over-trained" if a < 2 else "under-trained" if a > 6 else None
                rows.append({"layer": node.name or node.output[0], "weight": name, "op": node.op_type, **result})
    return rows


# -- the verdict ----------------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def decide(
    task: str,
    primary: str,
    splits: dict[str, SplitResult],
    gap: Gap | None,
    history: HistoryAnalysis | None,
    weights: list[dict[str, Any]] | None,
    p: DiagnoseParams,
    identical: bool,
) -> tuple[Verdict, str, list[Evidence]]:
    ev: list[Evidence] = []

    def note(code: str, points_to: str, text: str) -> None:
        ev.append(Evidence(code=code, points_to=points_to, text=text))  # type: ignore[arg-type]

    tr, va = splits["train"], splits["validation"]
    small = [r for r, s in splits.items() if s.samples < p.min_samples]
    if small:
        note(
            "too_few_samples",
            "inconclusive",
            f"{', '.join(f'{r} has {splits[r].samples}' for r in small)} samples, fewer than {p.min_samples}: "
            "intervals are too wide to decide",
        )
    if identical:
        note("same_data", "inconclusive", "train and validation are the same data")
    overfit = underfit = straddle = False
    learned = tr.gain is None or tr.gain > p.underfit_train_gain  # a gap means overfitting only if train was fit
    onset = history is not None and history.overfit_onset_epoch is not None
    if gap is not None and gap.relative is not None and not learned:
        note(
            "gap_of_an_unfit_model",
            "none",
            f"{primary} is {_num(tr.metrics[primary])} on train and {_num(va.metrics[primary])} on "
            f"validation: the model fits too little of train (gain {_pct(tr.gain)}) for the gap to mean "
            "overfitting",
        )
    elif gap is not None and gap.relative is not None:
        lo, hi = gap.relative_ci95 or [None, None]
        text = (
            f"{primary} falls from {_num(tr.metrics[primary])} on train to {_num(va.metrics[primary])} on validation: "
            f"a relative gap of {_pct(gap.relative)}"
            + (f" (95% interval {_pct(lo)} to {_pct(hi)})" if lo is not None else "")
            + (f", p = {gap.p_value:.2g}" if gap.p_value is not None else "")
        )
        if gap.relative >= p.overfit_relative_gap and lo is not None and lo > 0:
            overfit = True
            note(
                "significant_gap",
                "overfit",
                text + f"; at or above the {_pct(p.overfit_relative_gap)} threshold and significant",
            )
        elif gap.relative >= p.overfit_relative_gap:
            straddle = True
            note("gap_not_significant", "inconclusive", text + "; above the threshold but the interval includes 0")
        elif lo is not None and hi is not None and lo > 0 and hi >= p.overfit_relative_gap and onset:
            overfit = True  # a significant gap that may reach the threshold, and the curves show overfitting
            note(
                "significant_gap_and_onset",
                "overfit",
                text + f"; significant, its interval reaches the {_pct(p.overfit_relative_gap)} threshold, "
                "and the learning curves show overfitting",
            )
        elif lo is not None and hi is not None and lo < p.overfit_relative_gap <= hi:
            straddle = True
            note(
                "gap_straddles_threshold",
                "inconclusive",
                text + f"; the interval straddles the {_pct(p.overfit_relative_gap)} threshold",
            )
        else:
            note("small_gap", "good_fit", text + f"; below the {_pct(p.overfit_relative_gap)} threshold")
    if va.gain is not None and tr.gain is not None:
        text = (
            f"gain over the naive baseline ({'most frequent class' if task == 'classification' else 'the mean'}): "
            f"{_pct(tr.gain)} on train, {_pct(va.gain)} on validation"
        )
        if va.gain <= p.underfit_gain and tr.gain <= p.underfit_train_gain:
            underfit = True
            note(
                "no_gain_over_baseline",
                "underfit",
                text + f" (at most {_pct(p.underfit_gain)} / {_pct(p.underfit_train_gain)}): poor on both",
            )
        else:
            note("gain_over_baseline", "none", text)
    if p.train_target is not None and tr.metrics.get(primary) is not None and tr.metrics[primary] < p.train_target:  # type: ignore[operator]
        underfit = True
        note(
            "below_train_target",
            "underfit",
            f"{primary} on train {_num(tr.metrics[primary])} is below the target {p.train_target}",
        )
    if history is not None:
        if history.overfit_onset_epoch is not None:
            note(
                "history_onset",
                "overfit",
                f"validation loss is lowest at epoch {history.overfit_onset_epoch} of {history.epochs} and "
                "rises afterwards while training loss keeps falling",
            )
        if history.still_improving:
            note(
                "history_still_improving",
                "underfit",
                "training and validation loss are both still falling at the last epoch "
                f"({history.epochs}): more epochs would help",
            )
        if history.plateaued and tr.gain is not None and tr.gain <= 0.5:
            note(
                "history_plateau_low",
                "underfit",
                "both losses have flattened while train performance is low: more capacity or better "
                "features, not more epochs",
            )
    for w in weights or []:
        if w.get("flag"):
            note(
                "weights_alpha",
                "overfit" if w["alpha"] < 2 else "underfit",
                f"layer {w['layer']}: spectral alpha {w['alpha']:.2f} ({w['flag']}; supporting evidence only)",
            )

    if small or identical:
        verdict: Verdict = "inconclusive"
    elif overfit and underfit:
        verdict = "inconclusive"
        note("conflict", "inconclusive", "signals conflict: a significant gap and no gain over the baseline")
    elif overfit:
        verdict = "overfit"
    elif underfit:
        verdict = "underfit"
    elif straddle:
        verdict = "inconclusive"
    else:
        verdict = "good_fit"
    rel = _pct(gap.relative if gap else None)
    summaries = {
        "overfit": f"Overfit: {primary} is {rel} lower on validation than on train, beyond what chance explains.",
        "underfit": f"Underfit: the model gains only {_pct(va.gain)} over a naive baseline on validation "
        f"({_pct(tr.gain)} on train).",
        "good_fit": f"Good fit: {primary} {_num(va.metrics.get(primary))} on validation, {rel} below train, "
        f"{_pct(va.gain)} of the way from the naive baseline to perfect.",
        "inconclusive": "Inconclusive: " + "; ".join(e.text for e in ev if e.points_to == "inconclusive")[:400] + ".",
    }
    return verdict, summaries[verdict], ev


# -- remedies -------------------------------------------------------------------------------------------------
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
) -> list[Remedy]:
    out: list[Remedy] = []
    codes = {e.code for e in evidence}
    n_train = splits["train"].samples
    if (verdict == "overfit" or "history_onset" in codes) and history and history.monitor and history.best_epoch:
        mode = "min" if fit.minimize(history.monitor) else "max"
        stop_at = history.stopped_epoch or history.epochs
        keep = history.restored_epoch or history.best_epoch
        when = (
            f"training would have stopped at epoch {stop_at} and kept epoch {keep}"
            if history.stopped_epoch
            else f"training would have run all {history.epochs} epochs and kept epoch {keep}"
        )
        out.append(
            Remedy(
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
        )
    if verdict == "overfit":
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
        if gap is not None and gap.absolute > 0:
            out.append(
                Remedy(
                    action="more training data",
                    why=f"the gap ({_num(gap.absolute)} in {primary}) typically shrinks like 1/sqrt(n): a rule of "
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
    if history is not None and history.still_improving:
        out.append(
            Remedy(
                action="train for more epochs",
                why=f"both losses still fall at epoch {history.epochs}",
                setting={
                    "epochs": [history.epochs * 2, history.epochs * 3],
                    "with": "early stopping on the validation loss",
                },
            )
        )
    if verdict == "underfit":
        out.append(
            Remedy(
                action="more capacity (wider or deeper)",
                why=f"the model gains only {_pct(splits['validation'].gain)} over a naive baseline, on train too",
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
    if verdict == "inconclusive" and gap is not None:
        n_val = splits["validation"].samples
        acc = splits["validation"].metrics.get(primary) or 0.5
        half = 0.025 * max(abs(splits["train"].metrics.get(primary) or 1.0), 1e-9)
        needed = math.ceil(1.96**2 * max(acc * (1 - acc), 0.01) / half**2) if primary == "accuracy" else None
        out.append(
            Remedy(
                action="a larger validation set",
                why=f"the {primary} interval on {n_val} validation samples is too wide to decide",
                setting={"validation_samples_now": n_val, "for_2.5pt_half_width": needed}
                if needed
                else {"validation_samples_now": n_val},
            )
        )
    return out


KIND = JobKind(
    name="diagnose",
    params=DiagnoseParams,
    report=DiagnoseReport,
    run=run,
    validate=validate,
    roles=("train", "validation", "test", "history"),
    required=("train", "validation"),
    queue="measure",
    threads=lambda p: p.threads,
)
