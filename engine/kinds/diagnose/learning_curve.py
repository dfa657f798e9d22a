"""The data-size learning curve (`learning_curve: true`, needs the train extra): the model's own graph with fresh
random weights, re-trained on growing shares of the train split with one recipe, each measured on its training
share and on validation with bootstrap intervals. It answers "would more data help?" (the validation curve still
rising vs flat) and separates high variance (a gap that closes with data) from high bias (train itself stays poor).

It measures the architecture, not the uploaded weights: the report says so. The recipe (Adam, a learning rate and
an epoch count) is what a short search on 80% of train finds, validated on the other 20% (the validation split is
never used to choose it); with a training history the epoch count is the history's best epoch. Every share trains
for the same number of optimizer steps as the full split (epochs scaled by 1 / share), so a small share is not
simply under-trained. Weights: Glorot-uniform for weight matrices and kernels, zeros for biases and shifts, ones
for normalization scales; BatchNorm running statistics are not trained (the interpreter's inference semantics).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import RunContext
from engine.inspect import ModelInfo
from engine.kinds.diagnose.models import DiagnoseParams, SplitResult
from engine.measure.curves import HistoryAnalysis
from engine.measure.metrics import Predictions, label_indices
from engine.measure.stats import bootstrap_ci, gain
from engine.runtime import make_session, run_batched
from engine.training import OPTIMISTIC_MACS_PER_S

METHOD = (
    "re-trained from scratch: the model's architecture (its ONNX graph) with fresh random weights, trained on each "
    "share of the train split; the uploaded weights are not used"
)
SEARCH_SHARE = 0.8  # the recipe search trains on this share of train and validates on the rest


class CurvePoint(BaseModel):
    fraction: float
    samples: int
    epochs: int = Field(description="Epochs run: the recipe's epochs x (full train size / this share's size)")
    train: float | None = Field(description="The primary metric on the share it was trained on")
    train_ci95: list[float] | None
    validation: float | None
    validation_ci95: list[float] | None
    seconds: float

    def half_width(self, role: str = "validation") -> float | None:
        """Half the width of the 95% interval of the metric on `role` (train or validation)."""
        ci = getattr(self, f"{role}_ci95")
        return (ci[1] - ci[0]) / 2 if ci else None


class LearningCurve(BaseModel):
    method: str = Field(default=METHOD, description="What the curve measures: the architecture, not the weights")
    metric: str
    recipe: dict[str, Any] = Field(description="Optimizer, learning rate, epochs, batch size, and how they were found")
    search: list[dict[str, Any]] = Field(description="The learning rates tried: best epoch and held-out loss")
    points: list[CurvePoint]
    validation_rising: bool | None = Field(
        description="Over the last two steps of the curve (e.g. 25% -> 100%) the validation metric rose by more "
        "than the half-width of the full split's 95% interval: more data would still help"
    )
    reading: Literal["high_variance", "high_bias", "more_data_helps", "flat", "weak_recipe"]
    text: str

    @property
    def earlier(self) -> CurvePoint | None:
        """The point the last one is compared with to say whether validation still rises: two steps back."""
        return rising_from(self.points)


def rising_from(points: list[CurvePoint]) -> CurvePoint | None:
    return points[-3] if len(points) > 2 else points[-2] if len(points) > 1 else None


class _Data:
    """One split as feeds and targets: torch labels for training, the raw labels for ONNX Runtime's metrics."""

    def __init__(self, feeds: dict[str, np.ndarray], y: np.ndarray, labels: Any) -> None:
        self.feeds, self.y, self.labels = feeds, y, labels

    def take(self, idx: np.ndarray) -> _Data:
        return _Data({k: v[idx] for k, v in self.feeds.items()}, self.y[idx], self.labels[idx])


def estimate_seconds(info: ModelInfo, train_samples: int, p: DiagnoseParams) -> float | None:
    """The curve's training time, optimistic: search + every share (each as many steps as the full split)."""
    if not info.macs_per_sample:
        return None
    n = min(train_samples, p.max_samples or train_samples)
    epochs = p.learning_curve_epochs or p.learning_curve_search_epochs
    samples = len(p.learning_curve_learning_rates) * p.learning_curve_search_epochs * n * SEARCH_SHARE
    samples += len(p.learning_curve_sizes) * epochs * n
    return samples * 3 * info.macs_per_sample / OPTIMISTIC_MACS_PER_S


def reinitialise(module: Any, model: onnx.ModelProto, seed: int) -> None:
    """Fresh weights in place: Glorot-uniform matrices and kernels, zero biases, unit normalization scales."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    users: dict[str, tuple[onnx.NodeProto, int]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            users.setdefault(name, (node, i))
    with torch.no_grad():
        for name, param in module.params.items():
            node, index = users.get(name, (None, -1))
            op = node.op_type if node is not None else ""
            shape = tuple(param.shape)
            if op in ("BatchNormalization", "LayerNormalization", "InstanceNormalization") and index == 1:
                param.fill_(1.0)
            elif len(shape) < 2:
                param.zero_()
            else:
                fan_in, fan_out = _fans(op, node, shape)
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                param.copy_(torch.rand(shape, generator=gen, dtype=param.dtype) * 2 * bound - bound)


def _fans(op: str, node: onnx.NodeProto | None, shape: tuple[int, ...]) -> tuple[int, int]:
    if op == "Conv":  # [out, in / group, k...]
        field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        return shape[1] * field, shape[0] * field
    if op == "Gemm" and node is not None:
        trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
        return (shape[1], shape[0]) if trans_b else (shape[0], shape[1])
    return shape[-2], shape[-1]  # MatMul [in, out] (and anything else read the same way)


def learning_curve(
    ctx: RunContext,
    p: DiagnoseParams,
    output: str,
    task: str,
    primary: str,
    splits: dict[str, SplitResult],
    uploaded: Predictions,
    history: HistoryAnalysis | None,
) -> LearningCurve:
    """The curve for the model of `ctx` (`uploaded`: its predictions on train, for the classes and how its output
    reads: logits or probabilities)."""
    try:
        import torch
    except ImportError:
        raise EngineError(
            ErrorCode.MISSING_DEPENDENCY,
            "PyTorch is not installed on this worker: the learning curve needs the train extra (pip install "
            "torch==2.13.0, then pip install 'onnxsmith[train]')",
        ) from None
    from engine.training.loop import Distiller, Split
    from engine.training.torch_graph import OnnxModule

    torch.manual_seed(p.seed)
    torch.set_num_threads(min(p.threads, ctx.inputs.max_threads))
    model = onnx.load(ctx.inputs.model_path)
    module = OnnxModule(model)
    classification = task == "classification"
    n_classes = uploaded.values.shape[1] if classification else 0
    train, val = (_data(ctx, role, p, classification, n_classes) for role in ("train", "validation"))
    trainer = Distiller(module, output, classification, 1.0, 1.0, uploaded.interpretation == "probabilities")

    def fit(data: _Data, epochs: int, lr: float, held_out: _Data | None, stage: tuple[float, float]) -> Any:
        reinitialise(module, model, p.seed)
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        settings = _Settings(epochs, p.learning_curve_batch_size, p.seed, held_out is not None)

        def progress(f: float, text: str) -> None:
            ctx.progress(stage[0] + (stage[1] - stage[0]) * min(1.0, max(0.0, (f - 0.1) / 0.6)), text)

        as_split = Split(data.feeds, data.labels, None)
        other = Split(held_out.feeds, held_out.labels, None) if held_out is not None else None
        return trainer.fit(opt, as_split, other, params=settings, progress=progress)

    rng = np.random.default_rng(p.seed)
    order = rng.permutation(len(train.y))
    cut = int(len(order) * SEARCH_SHARE)
    search, rates = [], p.learning_curve_learning_rates
    for i, lr in enumerate(rates):
        stage = (0.65 + 0.07 * i / len(rates), 0.65 + 0.07 * (i + 1) / len(rates))
        trained = fit(train.take(order[:cut]), p.learning_curve_search_epochs, lr, train.take(order[cut:]), stage)
        losses = [v for v in trained.history.get("val_loss", []) if v is not None and math.isfinite(v)]
        search.append(
            {"learning_rate": lr, "best_epoch": trained.best_epoch, "held_out_loss": min(losses) if losses else None}
        )
    recipe = _recipe(p, search, history)

    points = []
    sizes = p.learning_curve_sizes  # sorted and without repeats (DiagnoseParams)
    for i, fraction in enumerate(sizes):
        n = max(2, round(fraction * len(order)))
        share = train.take(np.sort(order[:n]))
        share_epochs = max(1, math.ceil(recipe["epochs_at_full_size"] * len(order) / n))
        started = time.perf_counter()
        stage = (0.72 + 0.17 * i / len(sizes), 0.72 + 0.17 * (i + 1) / len(sizes))
        fit(share, share_epochs, recipe["learning_rate"], None, stage)
        module.write_back(model)
        path = ctx.scratch / f"curve-{i}.onnx"
        onnx.save(model, str(path))
        point: dict[str, Any] = {"fraction": fraction, "samples": n, "epochs": share_epochs}
        point.update(_measure(ctx, str(path), output, task, primary, p, {"train": share, "validation": val}))
        points.append(CurvePoint(**point, seconds=round(time.perf_counter() - started, 3)))
    return _read(points, primary, splits, p, recipe, search)


def _recipe(p: DiagnoseParams, search: list[dict[str, Any]], history: HistoryAnalysis | None) -> dict[str, Any]:
    """The learning rate with the lowest held-out loss; the epochs given, else the history's best, else the search's."""
    usable = [s for s in search if s["held_out_loss"] is not None and s["best_epoch"]]
    if not usable:
        raise EngineError(ErrorCode.RUNTIME_ERROR, "the learning curve's recipe search diverged at every learning rate")
    best = min(usable, key=lambda s: s["held_out_loss"])
    from_history = history is not None and (history.restored_epoch or history.best_epoch)
    epochs = p.learning_curve_epochs or (from_history or best["best_epoch"])
    found = (
        "given (learning_curve_epochs)"
        if p.learning_curve_epochs
        else "the training history's best epoch"
        if from_history
        else f"the search's best epoch ({SEARCH_SHARE:.0%} of train, validated on the rest)"
    )
    return {
        "optimizer": "adam",
        "learning_rate": best["learning_rate"],
        "epochs_at_full_size": int(epochs),
        "epochs_found_by": found,
        "learning_rate_found_by": f"lowest held-out loss among {p.learning_curve_learning_rates}",
        "batch_size": p.learning_curve_batch_size,
        "same_steps_per_share": True,
    }


def _measure(
    ctx: RunContext, path: str, output: str, task: str, primary: str, p: DiagnoseParams, data: dict[str, _Data]
) -> dict[str, Any]:
    """The re-trained model run by ONNX Runtime on each split: the primary metric and its bootstrap interval (the
    same metric code as the uploaded model's)."""
    session = make_session(path, 1)
    out: dict[str, Any] = {}
    for role, split in data.items():
        pred = Predictions(
            task, run_batched(session, split.feeds, output, 256), split.y, ctx.inputs.datasets[role].summary
        )
        out[role] = pred.metrics(extended=True).get(primary)
        out[f"{role}_ci95"] = bootstrap_ci(pred.metric_fn(primary), pred.n, min(p.bootstrap_resamples, 500), p.seed)
    return out


class _Settings:
    """What Distiller.fit reads: a fixed number of epochs; with a held-out share, early stopping on its loss."""

    def __init__(self, epochs: int, batch_size: int, seed: int, held_out: bool) -> None:
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.monitor = "val_loss" if held_out else "loss"
        self.min_delta = 0.0
        self.patience = 5 if held_out else None
        self.restore_best_weights = held_out


def _data(ctx: RunContext, role: str, p: DiagnoseParams, classification: bool, n_classes: int) -> _Data:
    import torch

    feeds, y = ctx.inputs.feeds(role, p.max_samples)
    assert y is not None
    if classification:
        labels = torch.from_numpy(label_indices(y, ctx.inputs.datasets[role].summary, n_classes))
    else:
        labels = torch.from_numpy(y.astype(np.float32).reshape(len(y), -1))
    return _Data(feeds, y, labels)


def _read(
    points: list[CurvePoint],
    primary: str,
    splits: dict[str, SplitResult],
    p: DiagnoseParams,
    recipe: dict[str, Any],
    search: list[dict[str, Any]],
) -> LearningCurve:
    """What the curve says: rising validation (more data helps), a gap that data closes (high variance), or a train
    metric that stays poor (high bias: capacity or features, not data)."""
    last = points[-1]
    rising, earlier, half = None, rising_from(points), last.half_width()
    if earlier is not None and last.validation is not None and earlier.validation is not None and half is not None:
        rising = last.validation - earlier.validation > half
    train_gain = gain(last.train, splits["train"].baseline_metrics.get(primary))
    uploaded = splits["train"].metrics.get(primary)
    slack = last.half_width("train") or 0.0
    gap = (last.train - last.validation) / abs(last.train) if last.train and last.validation is not None else None
    share = f"{last.fraction:.0%} ({last.samples} samples)"
    where = f"re-trained on {share}: {primary} {_f(last.train)} on train, {_f(last.validation)} on validation"
    if uploaded is not None and last.train is not None and last.train < uploaded - max(slack, 0.01 * abs(uploaded)):
        reading: Any = "weak_recipe"
        text = (
            f"{where}; the recipe fits train worse than the uploaded weights do ({_f(uploaded)}): the curve shows "
            "what this recipe reaches, not what the architecture can, and cannot tell high bias from a weak recipe"
        )
    elif train_gain is not None and train_gain < p.good_fit_gain:
        reading = "high_bias"
        text = (
            f"{where}; even re-trained, the architecture gains only {train_gain:.0%} over the naive baseline on "
            "its own training data: high bias (more capacity or features, not more data), or a task whose noise "
            "limits any model"
        )
    elif gap is not None and gap >= p.overfit_relative_gap and rising:
        reading = "high_variance"
        text = (
            f"{where}; a {gap:.0%} gap and validation still rising from {_f(earlier.validation if earlier else None)} "
            f"at {earlier.samples if earlier else '-'} samples: high variance, more data would help"
        )
    elif rising:
        reading = "more_data_helps"
        since = f"{_f(earlier.validation)} at {earlier.samples} samples" if earlier else "-"
        text = f"{where}; validation still rising from {since}"
    else:
        reading = "flat"
        before = f"{_f(earlier.validation)} at {earlier.samples} samples" if earlier else "-"
        text = f"{where}; validation flat since {before}"
    return LearningCurve(
        metric=primary,
        recipe=recipe,
        search=search,
        points=points,
        validation_rising=rising,
        reading=reading,
        text=text,
    )


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def refuse_unsupported(info: ModelInfo) -> None:
    """At submit: the interpreter must run every op of the model (scikit-learn graphs cannot be re-trained)."""
    from engine.inspect import refuse_unsupported_ops
    from engine.training.torch_graph import OnnxModule

    refuse_unsupported_ops(info, OnnxModule.SUPPORTED, "the learning curve's training interpreter")
