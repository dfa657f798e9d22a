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
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs, pick_output
from engine.core.kind import Kind, Outcome, ReportBase, RunContext
from engine.datasets import DatasetSummary, read_history
from engine.inspect import ModelInfo
from engine.kinds.diagnose.learning_curve import LearningCurve, estimate_seconds, learning_curve, refuse_unsupported
from engine.kinds.diagnose.models import SPLITS, DiagnoseParams, Evidence, Gap, Remedy, SplitResult, Verdict
from engine.kinds.diagnose.remedies import suggest
from engine.kinds.diagnose.verdict import decide
from engine.kinds.diagnose.weights import hidden_layers, weight_alphas
from engine.measure.curves import HistoryAnalysis, analyse_history
from engine.measure.metrics import PRIMARY, Predictions, per_class_recall
from engine.measure.stats import baseline_outputs, bootstrap_ci, bootstrap_gap, gain, two_proportion_p
from engine.runtime import fixed_batch, make_session, run_batched


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
    learning_curve: LearningCurve | None = Field(
        default=None,
        description="Data-size learning curve of the architecture, re-trained from scratch (not the uploaded weights)",
    )
    remedies: list[Remedy]
    thresholds: dict[str, Any]


def _digest(feeds: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(feeds):
        h.update(k.encode())
        h.update(np.ascontiguousarray(feeds[k]).tobytes())
    return h.hexdigest()


class Diagnose(Kind[DiagnoseParams, DiagnoseReport]):
    name = "diagnose"
    Params = DiagnoseParams
    Report = DiagnoseReport
    roles = ("train", "validation", "test", "history")
    required = ("train", "validation")
    queue = "measure"

    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        from engine.kinds.diagnose.charts import charts

        return charts(report)

    def threads(self, params: DiagnoseParams) -> int:
        return params.threads

    def needs(self, params: DiagnoseParams) -> set[str]:
        return {"torch"} if params.learning_curve else set()

    def estimate_seconds(
        self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: DiagnoseParams
    ) -> float | None:
        """The learning curve's training (search + every share at full-size steps), at an optimistic throughput."""
        if not params.learning_curve or "train" not in summaries:
            return None
        return estimate_seconds(info, summaries["train"].sample_count, params)

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: DiagnoseParams) -> None:
        for role in ("train", "validation", "test"):
            if role not in summaries:
                continue
            s = summaries[role]
            if s.kind != "samples":
                raise EngineError(ErrorCode.INCOMPATIBLE_DATA, f"the {role} dataset is a training history, not samples")
            if s.label is None:
                raise EngineError(
                    ErrorCode.INCOMPATIBLE_DATA, f"diagnose needs labels in the {role} dataset (label=... on upload)"
                )
            binding.plan(info.inputs, s)
        if params.learning_curve:
            refuse_unsupported(info)
        if "history" in summaries and summaries["history"].kind != "history":
            raise EngineError(ErrorCode.INCOMPATIBLE_DATA, "datasets.history must be a training history (kind=history)")
        pick_output(info, params.output)

    def run(self, ctx: RunContext, params: DiagnoseParams) -> Outcome[DiagnoseReport]:
        inputs, warnings, progress = ctx.inputs, ctx.warnings, ctx.progress
        output = pick_output(ctx.info, params.output)
        train_label = inputs.datasets["train"].summary.label
        assert train_label is not None
        task = params.task or train_label.kind
        predictions, digests = _predict(ctx, params, output, task)
        progress(0.6, "computing metrics and intervals")
        primary = _primary(params, task, predictions["train"])
        splits = _splits(predictions, primary, task, warnings)
        gap = _gap(params, predictions, splits, primary)

        identical = digests.get("train") == digests.get("validation")
        if identical:
            warnings.append("the train and validation datasets hold the same inputs: the gap is meaningless")
        history = None
        if "history" in inputs.datasets:
            progress(0.62, "reading the training history")
            ds = inputs.datasets["history"]
            curves, _ = read_history(Path(ds.path), ds.format)  # type: ignore[arg-type]  # a Format str
            history = analyse_history(
                curves, warnings, monitor=params.monitor, min_delta=params.min_delta, patience=params.patience
            )
        weights = None
        if params.weights:
            progress(0.64, "fitting the spectra of the weights")
            weights = weight_alphas(Path(inputs.model_path))

        curve = None
        if params.learning_curve:
            progress(0.65, "learning curve: searching a training recipe")
            curve = learning_curve(ctx, params, output, task, primary, splits, predictions["train"], history)

        progress(0.9, "deciding")
        verdict, summary, evidence = decide(task, primary, splits, gap, history, weights, params, identical, curve)
        hidden = hidden_layers(Path(inputs.model_path))
        remedies = suggest(verdict, primary, splits, gap, history, evidence, ctx.info, params, hidden, curve)
        report = DiagnoseReport(
            verdict=verdict,
            summary=summary,
            task=task,
            output=output,
            output_interpretation=predictions["train"].interpretation,
            primary_metric=primary,
            splits=splits,
            gap=gap,
            evidence=evidence,
            history=history,
            weights=weights,
            learning_curve=curve,
            remedies=remedies,
            thresholds={
                "overfit_relative_gap": params.overfit_relative_gap,
                "underfit_gain": params.underfit_gain,
                "underfit_train_gain": params.underfit_train_gain,
                "train_target": params.train_target,
                "good_fit_gain": params.good_fit_gain,
                "history_overfit_rise": params.history_overfit_rise,
                "min_samples": params.min_samples,
                "confidence": 0.95,
                "bootstrap_resamples": params.bootstrap_resamples,
                "seed": params.seed,
            },
        )
        return Outcome(report)


def _predict(
    ctx: RunContext, params: DiagnoseParams, output: str, task: str
) -> tuple[dict[str, Predictions], dict[str, str]]:
    """The model run on each split (its first max_samples): predictions against the labels, and input digests."""
    inputs: JobInputs = ctx.inputs
    forced = fixed_batch(ctx.info.inputs[0].shape) if ctx.info.inputs else None
    batch = forced or params.batch_size
    session = make_session(inputs.model_path, min(params.threads, inputs.max_threads))
    roles = [r for r in SPLITS if r in inputs.datasets]
    predictions, digests = {}, {}
    for i, role in enumerate(roles):
        ctx.progress(0.05 + 0.5 * i / len(roles), f"running the model on {role}")
        feeds, y = inputs.feeds(role)
        assert y is not None
        if params.max_samples is not None:
            feeds = {k: v[: params.max_samples] for k, v in feeds.items()}
            y = y[: params.max_samples]
        out = run_batched(session, feeds, output, batch)
        if forced is not None and len(y) % forced:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_DATA,
                f"{len(y)} {role} samples do not split into the model's fixed batch of {forced}",
            )
        bad = int((~np.isfinite(out.astype(np.float64))).sum())
        if bad:
            raise EngineError(ErrorCode.INVALID_OUTPUT, f"the model produced {bad} NaN/inf values on the {role} data")
        if task == "regression" and out.reshape(len(y), -1).shape != y.reshape(len(y), -1).shape:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_DATA,
                f"output {output!r} gives {list(out.reshape(len(y), -1).shape[1:])} values per sample, the {role} "
                f"labels {list(y.reshape(len(y), -1).shape[1:])}",
            )
        predictions[role] = Predictions(task, out, y, inputs.datasets[role].summary)
        digests[role] = _digest(feeds)
    return predictions, digests


def _primary(params: DiagnoseParams, task: str, train: Predictions) -> str:
    primary = params.primary_metric or PRIMARY[task]
    if task == "regression" and primary != "r2":
        raise EngineError(
            ErrorCode.INCOMPATIBLE_DATA, f"primary_metric {primary!r} is a classification metric; regression uses r2"
        )
    if primary == "roc_auc" and train.values.shape[1] != 2:
        raise EngineError(ErrorCode.INCOMPATIBLE_DATA, "primary_metric roc_auc needs a binary classifier")
    return primary


def _splits(
    predictions: dict[str, Predictions], primary: str, task: str, warnings: list[str]
) -> dict[str, SplitResult]:
    """Per split: the metrics, the naive baseline's (fitted on train) and the gain over it."""
    train = predictions["train"]
    n_classes = train.values.shape[1] if task == "classification" else None
    splits: dict[str, SplitResult] = {}
    for role, p in predictions.items():
        metrics = p.metrics(extended=True)
        base = p.with_values(baseline_outputs(task, train.target, p.n, n_classes)).metrics(extended=True)
        classes = p.values.argmax(axis=1) if task == "classification" else None
        splits[role] = SplitResult(
            samples=p.n,
            metrics=metrics,
            baseline_metrics=base,
            gain=gain(metrics.get(primary), base.get(primary)),
            per_class_recall=per_class_recall(p.values, p.target) if task == "classification" else None,
            predicted_classes=int(len(np.unique(classes))) if classes is not None else None,
        )
        if classes is not None and n_classes is not None:
            present = set(np.unique(p.target).tolist())
            if role == "validation" and len(present) == 1 and n_classes > 1:
                warnings.append("the validation labels hold a single class: accuracy says little")
            unseen = sorted(present - set(np.unique(classes).tolist()))
            if unseen:
                warnings.append(f"on {role}, the model never predicts class(es) {unseen[:20]} that occur in the labels")
    return splits


def _gap(
    params: DiagnoseParams, predictions: dict[str, Predictions], splits: dict[str, SplitResult], primary: str
) -> Gap | None:
    """How much worse validation is than train, with bootstrap intervals (and the primary's interval per split).
    Regression measures the gap on RMSE, not R^2: R^2 is unbounded below (-6e4 for a polynomial extrapolating), so
    a relative gap on it means nothing; R^2 stays in the report as a description. The RMSE gap is relative to the
    naive baseline's RMSE on validation: a flexible model that fits a little noise (train RMSE 10% under
    validation's, validation at the noise level) is not called overfit, a tree that memorises train is."""
    n_train, n_val = splits["train"].samples, splits["validation"].samples
    fa, fb = predictions["train"].metric_fn(primary), predictions["validation"].metric_fn(primary)
    for role, f in (("train", fa), ("validation", fb)):
        splits[role].primary_ci95 = bootstrap_ci(f, splits[role].samples, params.bootstrap_resamples, params.seed)
    loss = predictions["train"].task == "regression"
    metric = "rmse" if loss else primary
    fa, fb = predictions["train"].metric_fn(metric), predictions["validation"].metric_fn(metric)
    # regression: the RMSE gap in units of the naive baseline's RMSE on validation (the labels' spread), the share of
    # the room between the baseline and perfect that is lost from train to validation (the gain's own yardstick)
    scale = splits["validation"].baseline_metrics.get("rmse") if loss else None
    boot = bootstrap_gap(
        fa, fb, n_train, n_val, params.bootstrap_resamples, params.seed, lower_is_better=loss, scale=scale or None
    )
    if "test" in predictions:
        splits["test"].primary_ci95 = bootstrap_ci(
            predictions["test"].metric_fn(primary), splits["test"].samples, params.bootstrap_resamples, params.seed
        )
    a, b = splits["train"].metrics.get(metric), splits["validation"].metrics.get(metric)
    if a is None or b is None:
        return None
    worse, base = (b - a, scale or b) if loss else (a - b, a)
    gap = Gap(
        metric=metric,
        lower_is_better=loss,
        absolute=worse,
        relative=worse / abs(base) if base else None,
        absolute_ci95=boot.get("absolute"),
        relative_ci95=boot.get("relative"),
        resamples=boot["resamples"],
        p_value=two_proportion_p(a, n_train, b, n_val) if primary == "accuracy" else None,
    )
    test = splits["test"].metrics.get(metric) if "test" in splits else None
    if test is not None:
        gap.test_absolute = test - a if loss else a - test
    return gap


KIND = Diagnose()
