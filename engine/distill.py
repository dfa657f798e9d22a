"""The `distill` job: train a smaller student to imitate the original model (the teacher), recovering the accuracy
that structured pruning costs (Hinton et al., 2015).

Student: another model of the tenant with the same signature (`student_model_id`, typically a prune job's
output), or the teacher structurally pruned by the prune engine (`student: auto`, `ratio`). The student trains
as its own ONNX graph in PyTorch (engine/torch_graph.py); the trained weights go back into the same
initializers, and ONNX Runtime on the result is checked against the interpreter. Teacher outputs are computed
once with ONNX Runtime.

Loss — classification: alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) ||
softmax(student / T)); regression: alpha * MSE(student, labels) + (1 - alpha) * MSE(student, teacher).
Early stopping follows Keras (monitor, min_delta, patience, restore best weights); a NaN loss stops training and
restores the best weights. The per-epoch history is analysed by the diagnose job's learning-curve code.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field, model_validator

from engine import binding, fit
from engine.compare import Comparison, check_same_signature, compare, feeds_for
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.evaluate import class_probabilities, label_indices, pick_output
from engine.inspect import ModelInfo, check_and_inspect
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import make_session, run_batched

INTERPRETER_TOLERANCE = 1e-3


class DistillParams(StrictParams):
    student: Literal["auto"] = Field(
        default="auto",
        description="auto: the teacher structurally pruned by `ratio` (prune engine, L1); ignored when "
        "student_model_id is given",
    )
    student_model_id: str | None = Field(
        default=None, description="A model of the tenant to train instead (same inputs and outputs as the teacher)"
    )
    ratio: float = Field(default=0.5, gt=0, lt=1, description="auto student: fraction of each layer's units removed")
    temperature: float = Field(default=4.0, gt=0, le=100, description="Softens both distributions (classification)")
    alpha: float = Field(
        default=0.5, ge=0, le=1, description="Weight of the label loss; 1 - alpha weighs imitating the teacher"
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=65536)
    seed: int = 0
    monitor: Literal["val_loss", "val_accuracy", "loss"] = Field(
        default="val_loss", description="Early-stopping curve (val_* needs a validation dataset)"
    )
    min_delta: float = Field(default=0.0, ge=0)
    patience: int | None = Field(default=5, ge=1, description="Epochs without improvement before stopping; null: never")
    restore_best_weights: bool = True
    output: str | None = Field(default=None, description="The output to distill (default: the first float output)")
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: int = Field(default=1, ge=1, le=64, description="Threads for training and for timing")
    runs: int = Field(default=30, ge=5, le=10000)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:  # {"student": {"auto": {"ratio": r}}} -> student auto, ratio r
        if isinstance(data, dict) and isinstance(data.get("student"), dict):
            auto = data["student"].get("auto")
            if not isinstance(auto, dict) or set(data["student"]) != {"auto"}:
                raise ValueError('student must be "auto" or {"auto": {"ratio": r}}')
            if data.get("student_model_id"):
                raise ValueError("give student_model_id or an auto student, not both")
            data = {**data, "student": "auto", **({"ratio": auto["ratio"]} if "ratio" in auto else {})}
        return data


class DistillReport(ReportBase):
    kind: Literal["distill"] = "distill"
    student: dict[str, Any] = Field(description="How the student was made, its layers and size")
    comparison: Comparison = Field(description="Teacher (original) vs the trained student")
    before_training: dict[str, str | float | None] = Field(
        description="The pruned student's metric on eval before distillation"
    )
    parameters: dict[str, int]
    macs_per_sample: dict[str, int | None]
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    diverged_at_epoch: int | None = None
    training_seconds: float
    history: dict[str, list[float | None]] = Field(description="Per epoch: loss, val_loss, val_accuracy (or val_r2)")
    learning_curves: dict[str, Any] | None = Field(description="The diagnose job's analysis of that history")
    interpreter_max_difference: float
    config: dict[str, Any]


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: DistillParams) -> None:
    train = summaries["train"]
    if train.kind != "samples":
        raise EngineError("incompatible_data", "the train dataset is a training history, not samples")
    if params.alpha > 0 and train.label is None:
        raise EngineError(
            "incompatible_data",
            f"alpha {params.alpha} weighs a label loss but the train dataset has no labels; "
            "set alpha 0 to learn from the teacher alone",
        )
    binding.plan(info.inputs, train)
    for role in ("validation", "eval"):
        if role in summaries:
            binding.plan(info.inputs, summaries[role])
    if params.monitor.startswith("val_") and "validation" not in summaries and params.patience is not None:
        raise EngineError("missing_dataset", f"monitor {params.monitor} needs a validation dataset (or monitor 'loss')")
    pick_output(info, params.output)


def validate_models(info: ModelInfo, others: dict[str, ModelInfo], params: DistillParams) -> None:
    """The student must take the teacher's inputs and give its outputs (names, types, fixed dimensions)."""
    check_same_signature(info, others["student"], names=("teacher", "student"))


# Training throughput of the interpreter, optimistic on purpose (measured 4.7-6.4 GMAC/s forward+backward on the
# digits models, 1 thread, BENCHMARKS.md): the estimate refuses only runs that cannot fit the job time limit.
OPTIMISTIC_MACS_PER_S = 10e9


def estimate_seconds(info: ModelInfo, summaries: dict[str, DatasetSummary], params: DistillParams) -> float | None:
    """Training time if every epoch ran: epochs x train samples x 3 (forward, backward) x the teacher's MACs."""
    if not info.macs_per_sample or "train" not in summaries:
        return None
    return params.epochs * summaries["train"].sample_count * 3 * info.macs_per_sample / OPTIMISTIC_MACS_PER_S


def _teacher_outputs(path: str, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    session = make_session(path, 1)
    return run_batched(session, feeds_for(session, feeds), output, 256).astype(np.float32)


def run(inputs: JobInputs, params: DistillParams, progress: Progress) -> tuple[DistillReport, list[ArtifactOut]]:
    try:
        import torch
    except ImportError:
        raise EngineError(
            "missing_dependency",
            "PyTorch is not installed on this worker: distillation needs the train extra (pip install torch==2.13.0, "
            "then pip install 'onnxsmith[train]')",
        ) from None
    from engine.diagnose import DiagnoseParams, analyse_history
    from engine.structured import prune_structured
    from engine.torch_graph import OnnxModule, max_disagreement

    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    out_dir = Path(inputs.out_dir)
    teacher_path = inputs.model_path
    output = pick_output(info, params.output)
    torch.manual_seed(params.seed)
    torch.set_num_threads(min(params.threads, inputs.max_threads))

    if params.student_model_id:
        student = onnx.load(inputs.models["student"].path)
        rows, alone = [], []
        made_by = f"model {params.student_model_id}"
        if inputs.models["student"].info.parameter_count >= info.parameter_count:
            warnings.append("the student has at least as many parameters as the teacher (allowed)")
    else:
        progress(0.02, "making the student (structured pruning of the teacher)")
        student = onnx.load(teacher_path)
        rows, alone = prune_structured(student, params.ratio, None, "l1", set(), set())
        if not rows:
            reasons = "; ".join(f"{a['layer']}: {a['why']}" for a in alone[:10])
            raise EngineError(
                "nothing_to_prune", f"no layer of the teacher could be pruned to make a student ({reasons})"
            )
        made_by = f"structured pruning of the teacher, ratio {params.ratio} (L1)"
    module = OnnxModule(student)

    progress(0.05, "computing the teacher's outputs")
    x_train, y_train = inputs.feeds("train")
    t_train = _teacher_outputs(teacher_path, x_train, output)
    has_val = "validation" in inputs.datasets
    x_val, y_val = inputs.feeds("validation") if has_val else (None, None)
    t_val = _teacher_outputs(teacher_path, x_val, output) if has_val else None
    label_summary = inputs.datasets["train"].summary.label
    classification = (
        (label_summary.kind == "classification") if label_summary else t_train.ndim == 2 and t_train.shape[1] > 1
    )
    n_classes = class_probabilities(t_train[:1])[0].shape[1] if classification else None

    def labels(y: np.ndarray | None, role: str) -> Any:
        if y is None:
            return None
        if classification:
            return torch.from_numpy(label_indices(y, inputs.datasets[role].summary, n_classes))
        return torch.from_numpy(y.astype(np.float32).reshape(len(y), -1))

    def soft(t: np.ndarray) -> Any:
        if classification:
            probs, kind = class_probabilities(t)
            logits = np.log(np.clip(probs, 1e-12, 1.0)) if kind == "probabilities" else t.reshape(len(t), -1)
            return torch.from_numpy(logits.astype(np.float32))
        return torch.from_numpy(t.reshape(len(t), -1))

    yt, tt = labels(y_train, "train"), soft(t_train)
    yv, tv = (labels(y_val, "validation"), soft(t_val)) if has_val else (None, None)
    T, alpha = params.temperature, params.alpha if yt is not None else 0.0
    F = torch.nn.functional

    def loss_fn(out: Any, y: Any, t: Any) -> Any:
        out = out.reshape(out.shape[0], -1)
        if classification:
            if out.shape[1] == 1:  # one logit: a binary classifier as two logits [0, z]
                out = torch.cat([torch.zeros_like(out), out], dim=1)
            kd = F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
                          reduction="batchmean") * T * T  # fmt: skip
            hard = F.cross_entropy(out, y) if y is not None and alpha > 0 else out.new_zeros(())
        else:
            kd = F.mse_loss(out, t)
            hard = F.mse_loss(out, y) if y is not None and alpha > 0 else out.new_zeros(())
        return alpha * hard + (1 - alpha) * kd

    def feeds_t(feeds: dict[str, np.ndarray], idx: Any) -> dict[str, Any]:
        return {k: torch.from_numpy(np.ascontiguousarray(v[idx.numpy()])) for k, v in feeds.items()}

    def evaluate(feeds: dict[str, np.ndarray], y: Any, t: Any) -> tuple[float, float | None]:
        with torch.no_grad():
            total, correct, n = 0.0, 0, len(t)
            for idx in torch.arange(n).split(1024):
                out = module(feeds_t(feeds, idx))[output].reshape(len(idx), -1)
                total += float(loss_fn(out, y[idx] if y is not None else None, t[idx])) * len(idx)
                if classification and y is not None:
                    logits = torch.cat([torch.zeros_like(out), out], 1) if out.shape[1] == 1 else out
                    correct += int((logits.argmax(1) == y[idx]).sum())
            return total / n, (correct / n if classification and y is not None else None)

    params_list = module.parameters()
    opt = (
        torch.optim.AdamW(params_list, lr=params.learning_rate, weight_decay=params.weight_decay)
        if params.optimizer == "adamw"
        else torch.optim.SGD(params_list, lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay)
    )
    eval_role = "eval" if "eval" in inputs.datasets else ("validation" if has_val else "train")
    eval_feeds, eval_labels = inputs.feeds(eval_role)
    summary = inputs.datasets[eval_role].summary
    before = _student_metric(student, out_dir / "student.untrained.onnx", eval_feeds, eval_labels, summary, output)

    history: dict[str, list[float | None]] = {"loss": [], "val_loss": [], "val_accuracy": []}
    best_value, best_epoch, best_state, wait, stopped, diverged = None, None, module.state(), 0, False, None
    mode_min = params.monitor != "val_accuracy"
    gen = torch.Generator().manual_seed(params.seed)
    n_train = len(tt)
    started = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        running, seen = 0.0, 0
        for idx in torch.randperm(n_train, generator=gen).split(params.batch_size):
            opt.zero_grad()
            out = module(feeds_t(x_train, idx))[output]
            loss = loss_fn(out, yt[idx] if yt is not None else None, tt[idx])
            if not torch.isfinite(loss):
                diverged = epoch
                break
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
        if diverged:
            warnings.append(f"the loss became NaN/inf at epoch {epoch}: training stopped, best weights restored")
            break
        train_loss = running / max(seen, 1)
        val_loss, val_acc = evaluate(x_val, yv, tv) if has_val else (None, None)
        history["loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        progress(
            0.1 + 0.6 * epoch / params.epochs,
            f"epoch {epoch}/{params.epochs}: train loss {train_loss:.4g}"
            + (f", validation loss {val_loss:.4g}" if val_loss is not None else ""),
        )
        value = {"loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}[params.monitor]
        if value is not None and math.isfinite(value):
            better = best_value is None or (
                value < best_value - params.min_delta if mode_min else value > best_value + params.min_delta
            )
            if better:
                best_value, best_epoch, best_state, wait = value, epoch, module.state(), 0
            else:
                wait += 1
                if params.patience is not None and wait >= params.patience:
                    stopped = True
                    break
    training_seconds = time.perf_counter() - started
    if params.restore_best_weights or diverged:
        module.load_state(best_state)
    if not history["val_accuracy"] or all(v is None for v in history["val_accuracy"]):
        history.pop("val_accuracy")
    if not has_val:
        history.pop("val_loss")

    progress(0.72, "writing the trained weights into the student's graph")
    module.write_back(student)
    dst = out_dir / "model.distilled.onnx"
    onnx.save(student, str(dst))
    (out_dir / "student.untrained.onnx").unlink(missing_ok=True)
    probe = {k: v[:64] for k, v in (x_val if has_val else x_train).items()}
    difference = max_disagreement(str(dst), module, probe)
    if difference > INTERPRETER_TOLERANCE:
        raise EngineError(
            "distill_failed",
            f"ONNX Runtime on the trained student differs from the training interpreter by {difference:.3g}",
        )
    out_info = check_and_inspect(str(dst))
    curves = None
    if history["loss"]:
        curves = analyse_history(
            {k: [math.nan if v is None else v for v in vals] for k, vals in history.items()},
            DiagnoseParams(monitor=params.monitor if params.monitor in history else None, min_delta=params.min_delta,
                           patience=params.patience),
            warnings,
        ).model_dump(mode="json")  # fmt: skip

    comparison = compare(
        teacher_path,
        str(dst),
        outputs=[o.name for o in info.outputs],
        eval_feeds=eval_feeds,
        labels=eval_labels,
        label_summary=summary,
        task=summary.label.kind if summary.label else None,
        prediction_output=output,
        batch_sizes=params.batch_sizes,
        threads=sorted({1, min(params.threads, inputs.max_threads)}),
        runs=params.runs,
        warmup=3,
        progress=lambda f, stage: progress(0.75 + 0.23 * f, stage),
    )
    if eval_role == "train":
        warnings.append("no validation or eval dataset: the comparison is measured on the training data")
    if out_info.parameter_count >= info.parameter_count and not params.student_model_id:
        warnings.append("the student is not smaller than the teacher")
    machine.load_average_1m_after = load_average()
    report = DistillReport(
        warnings=warnings,
        machine=machine,
        student={
            "made_by": made_by,
            "pruned_layers": rows,
            "left_alone": alone,
            "trainable_tensors": len(params_list),
        },  # fmt: skip
        comparison=comparison,
        before_training=before,
        parameters={"teacher": info.parameter_count, "student": out_info.parameter_count},
        macs_per_sample={"teacher": info.macs_per_sample, "student": out_info.macs_per_sample},
        epochs_run=len(history["loss"]),
        best_epoch=best_epoch,
        stopped_early=stopped,
        diverged_at_epoch=diverged,
        training_seconds=round(training_seconds, 3),
        history=history,
        learning_curves=curves,
        interpreter_max_difference=difference,
        config=params.model_dump(mode="json"),
    )
    artifacts = [
        ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model="distilled",
            model_info=out_info.model_dump(mode="json"),
        )
    ]
    return report, artifacts


def _student_metric(
    student: onnx.ModelProto, path: Path, feeds: dict[str, np.ndarray], y: np.ndarray | None, summary: Any, output: str
) -> dict:
    """The untrained student's primary metric on the eval data (what distillation starts from)."""
    onnx.save(student, str(path))
    if y is None or summary.label is None:
        return {"metric": None, "value": None}
    session = make_session(str(path), 1)
    out = run_batched(session, feeds_for(session, feeds), output, 256)
    if summary.label.kind == "classification":
        probs, _ = class_probabilities(out)
        value = fit.classification_report(probs, label_indices(y, summary, probs.shape[1]))["metrics"]["accuracy"]
        return {"metric": "accuracy", "value": value}
    pred, target = out.astype(np.float64).reshape(len(y), -1), y.astype(np.float64).reshape(len(y), -1)
    return {"metric": "r2", "value": fit.regression_report(pred, target)["metrics"]["r2"]}


KIND = JobKind(
    name="distill",
    params=DistillParams,
    report=DistillReport,
    run=run,
    validate=validate,
    roles=("train", "validation", "eval"),
    required=("train",),
    queue="default",
    threads=lambda p: p.threads,
    other_models=lambda p: {"student": p.student_model_id} if p.student_model_id else {},
    validate_models=validate_models,
    estimate_seconds=estimate_seconds,
    needs=lambda p: {"torch"},
)
