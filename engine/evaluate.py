"""The `evaluate` job: task metrics of a model on a labeled dataset, plus sample count and throughput."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from engine import binding
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.inspect import ModelInfo
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import fixed_batch, make_session, run_batched

Task = Literal["classification", "regression"]


class EvaluateParams(StrictParams):
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    batch_size: int = Field(default=256, ge=1, le=65536, description="Samples per ONNX Runtime call")
    threads: int = Field(default=1, ge=1, le=64, description="ONNX Runtime intra-op threads")
    max_samples: int | None = Field(default=None, ge=1, description="Evaluate on the first N samples only")


class EvaluateReport(ReportBase):
    kind: Literal["evaluate"] = "evaluate"
    task: Task
    sample_count: int
    output: str
    output_interpretation: Literal["logits", "probabilities", "values"] = Field(
        description="How the output was read: logits get a softmax/sigmoid, probabilities are used as they are"
    )
    metrics: dict[str, float | None] = Field(
        description="classification: accuracy, macro_f1, log_loss; regression: mse, mae, r2 (fractions, not %)"
    )
    accuracy_ci95: list[float] | None = Field(
        default=None, description="Wilson 95% interval of the accuracy over the evaluated samples"
    )
    class_count: int | None = None
    confusion_matrix: list[list[int]] | None = Field(
        default=None, description="Counts [true class][predicted class] (classification with at most 50 classes)"
    )
    seconds: float = Field(description="Wall time of the model runs (s)")
    throughput_samples_per_s: float
    batch_size: int
    threads: int


def pick_output(info: ModelInfo, requested: str | None) -> str:
    if requested is not None:
        if requested not in [o.name for o in info.outputs]:
            raise EngineError(
                "unknown_output",
                f"output {requested!r} is not an output of the model: {[o.name for o in info.outputs]}",
            )
        return requested
    for o in info.outputs:
        if o.elem_type in ("float32", "float64", "float16"):
            return o.name
    raise EngineError("unknown_output", "the model has no float output; name the prediction output in params.output")


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: EvaluateParams) -> None:
    summary = summaries["eval"]
    if summary.kind != "samples":
        raise EngineError("incompatible_data", "the eval dataset is a training history, not samples")
    if summary.label is None:
        raise EngineError("incompatible_data", "evaluate needs a labeled eval dataset (send label=... on upload)")
    pick_output(info, params.output)
    binding.plan(info.inputs, summary)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_probabilities(out: np.ndarray) -> tuple[np.ndarray, str]:
    """[N, C] probabilities from a model output of logits or probabilities ([N], [N, 1]: binary)."""
    out = out.astype(np.float64).reshape(out.shape[0], -1)
    is_prob = bool(np.all(out >= 0) and np.all(out <= 1))
    if out.shape[1] == 1:
        p1 = out[:, 0] if is_prob else 1.0 / (1.0 + np.exp(-out[:, 0]))
        return np.stack([1 - p1, p1], axis=1), "probabilities" if is_prob else "logits"
    if is_prob and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out, "probabilities"
    return _softmax(out), "logits"


def label_indices(y: np.ndarray, summary: DatasetSummary, n_classes: int) -> np.ndarray:
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
            "incompatible_data",
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


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    accuracy = float((pred == y).mean())
    f1s = []
    for c in np.union1d(y, pred):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    log_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0))))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)), "log_loss": log_loss}


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    err = pred - y
    ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
    return {
        "mse": float((err**2).mean()),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
    }


def run(inputs: JobInputs, params: EvaluateParams, progress: Progress) -> tuple[EvaluateReport, list[ArtifactOut]]:
    machine = machine_info()
    ds = inputs.datasets["eval"]
    info = inputs.model_info
    output = pick_output(info, params.output)
    progress(0.02, "loading data")
    feeds, y = inputs.feeds("eval")
    assert y is not None and ds.summary.label is not None
    if params.max_samples is not None:
        feeds = {k: v[: params.max_samples] for k, v in feeds.items()}
        y = y[: params.max_samples]
    n = len(y)
    warnings: list[str] = []
    batch = params.batch_size
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    if forced is not None and forced != batch:
        warnings.append(f"the model's inputs have a fixed batch of {forced}; batch_size {batch} was replaced")
        batch = forced
        if n % batch:
            raise EngineError("incompatible_data", f"{n} samples do not split into the model's fixed batch of {batch}")
    threads = min(params.threads, inputs.max_threads)
    if threads < params.threads:
        warnings.append(f"threads capped at {threads} by the worker's limit")
    progress(0.05, "loading model")
    session = make_session(inputs.model_path, threads)
    started = time.perf_counter()
    out = run_batched(session, feeds, output, batch, lambda f: progress(0.05 + 0.9 * f, "running the model"))
    seconds = time.perf_counter() - started
    progress(0.96, "computing metrics")

    task = ds.summary.label.kind
    ci = None
    class_count = None
    confusion = None
    if task == "classification":
        probs, interpretation = class_probabilities(out)
        class_count = probs.shape[1]
        yi = label_indices(y, ds.summary, class_count)
        metrics = classification_metrics(probs, yi)
        ci = wilson_ci95(int(round(metrics["accuracy"] * n)), n)
        predictions = probs.argmax(axis=1)
        if class_count <= 50:
            confusion = np.zeros((class_count, class_count), dtype=np.int64)
            np.add.at(confusion, (yi, predictions), 1)
    else:
        interpretation = "values"
        pred = out.astype(np.float64).reshape(n, -1)
        target = y.astype(np.float64).reshape(n, -1)
        if pred.shape != target.shape:
            raise EngineError(
                "incompatible_data", f"output {output!r} has shape {list(out.shape)}, labels {list(y.shape)}"
            )
        metrics = regression_metrics(pred, target)
        if metrics["r2"] is None:
            warnings.append("r2 is undefined: the labels are constant")
        predictions = pred
    np.savez_compressed(Path(inputs.out_dir) / "predictions.npz", output=out, prediction=predictions, label=y)
    machine.load_average_1m_after = load_average()
    report = EvaluateReport(
        warnings=warnings,
        machine=machine,
        task=task,
        sample_count=n,
        output=output,
        output_interpretation=interpretation,
        metrics=metrics,
        accuracy_ci95=ci,
        class_count=class_count,
        confusion_matrix=confusion.tolist() if confusion is not None else None,
        seconds=round(seconds, 6),
        throughput_samples_per_s=round(n / seconds, 2) if seconds > 0 else 0.0,
        batch_size=batch,
        threads=threads,
    )
    artifacts = [ArtifactOut(role="predictions", filename="predictions.npz", media_type="application/x-npz")]
    return report, artifacts


KIND = JobKind(
    name="evaluate",
    params=EvaluateParams,
    report=EvaluateReport,
    run=run,
    validate=validate,
    roles=("eval",),
    required=("eval",),
    queue="measure",
    threads=lambda p: p.threads,
)
