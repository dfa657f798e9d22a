"""The `distill` job: train a smaller student to imitate the original model (the teacher), recovering the accuracy
that structured pruning costs (Hinton et al., 2015).

Student: another model of the tenant with the same signature (`student_model_id`, typically a prune job's
output), or the teacher structurally pruned (engine.pruning.structured; `student: auto`, `ratio`). The student
trains as its own ONNX graph in PyTorch (engine/training/torch_graph.py); the trained weights go back into the same
initializers, and ONNX Runtime on the result is checked against the interpreter. Teacher outputs are computed
once with ONNX Runtime. The loss and the loop are in engine/training/loop.py; the per-epoch history is analysed by
the shared learning-curve code (engine.measure.curves).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field, model_validator

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import pick_output
from engine.core.kind import ArtifactOut, BatchSize, Kind, Outcome, ReportBase, RunContext, StrictParams
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo, check_and_inspect, refuse_unsupported_ops
from engine.measure.comparison import Comparison, check_same_signature, compare
from engine.measure.curves import analyse_history
from engine.measure.data import EvalData, feeds_for
from engine.measure.metrics import class_probabilities, label_indices, primary_metric, task_of
from engine.pruning.structured import prune_structured
from engine.runtime import make_session, run_batched
from engine.training import OPTIMISTIC_MACS_PER_S
from engine.training.torch_graph import OnnxModule

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
    coupled: Literal["group", "leave"] = Field(
        default="group",
        description="auto student: coupled layers (a residual, attention) pruned together as one group, or left "
        "whole (layer by layer)",
    )
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
    batch_sizes: list[BatchSize] = Field(default=[1, 32], min_length=1, max_length=4)
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


def _teacher_outputs(path: str, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    session = make_session(path, 1)
    return run_batched(session, feeds_for(session, feeds), output, 256).astype(np.float32)


class Distill(Kind[DistillParams, DistillReport]):
    name = "distill"
    Params = DistillParams
    Report = DistillReport
    roles = ("train", "validation", "eval")
    required = ("train",)

    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        from engine.kinds.distill.charts import charts

        return charts(report)

    def threads(self, params: DistillParams) -> int:
        return params.threads

    def needs(self, params: DistillParams) -> set[str]:
        return {"torch"}

    def other_models(self, params: DistillParams) -> dict[str, str]:
        return {"student": params.student_model_id} if params.student_model_id else {}

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: DistillParams) -> None:
        train = summaries["train"]
        if train.kind != "samples":
            raise EngineError(ErrorCode.INCOMPATIBLE_DATA, "the train dataset is a training history, not samples")
        if params.alpha > 0 and train.label is None:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_DATA,
                f"alpha {params.alpha} weighs a label loss but the train dataset has no labels; "
                "set alpha 0 to learn from the teacher alone",
            )
        refuse_unsupported_ops(info, OnnxModule.SUPPORTED, "the training interpreter")
        binding.plan(info.inputs, train)
        for role in ("validation", "eval"):
            if role in summaries:
                binding.plan(info.inputs, summaries[role])
        if params.monitor.startswith("val_") and "validation" not in summaries and params.patience is not None:
            raise EngineError(
                ErrorCode.MISSING_DATASET, f"monitor {params.monitor} needs a validation dataset (or monitor 'loss')"
            )
        pick_output(info, params.output)

    def validate_models(self, info: ModelInfo, others: dict[str, ModelInfo], params: DistillParams) -> None:
        """The student must take the teacher's inputs and give its outputs (names, types, fixed dimensions)."""
        check_same_signature(info, others["student"], names=("teacher", "student"))
        refuse_unsupported_ops(others["student"], OnnxModule.SUPPORTED, "the training interpreter (the student)")

    def estimate_seconds(
        self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: DistillParams
    ) -> float | None:
        """Training time if every epoch ran: epochs x train samples x 3 (forward, backward) x the teacher's MACs."""
        if not info.macs_per_sample or "train" not in summaries:
            return None
        return params.epochs * summaries["train"].sample_count * 3 * info.macs_per_sample / OPTIMISTIC_MACS_PER_S

    def detail(self, report: DistillReport) -> str:
        before = report.before_training
        return (
            f"{report.epochs_run} epochs (best {report.best_epoch}), {before.get('metric')} before training "
            f"{before.get('value')}, training {report.training_seconds} s"
        )

    def run(self, ctx: RunContext, params: DistillParams) -> Outcome[DistillReport]:
        try:
            import torch
        except ImportError:
            raise EngineError(
                ErrorCode.MISSING_DEPENDENCY,
                "PyTorch is not installed on this worker: distillation needs the train extra (pip install "
                "torch==2.13.0, then pip install 'onnxsmith[train]')",
            ) from None
        from engine.training.loop import Distiller
        from engine.training.torch_graph import max_disagreement

        inputs, info, warnings = ctx.inputs, ctx.info, ctx.warnings
        output = pick_output(info, params.output)
        torch.manual_seed(params.seed)
        torch.set_num_threads(min(params.threads, inputs.max_threads))
        student, rows, alone, made_by = _student(ctx, params)
        module = OnnxModule(student)

        ctx.progress(0.05, "computing the teacher's outputs")
        train, val, classification, probabilities = _splits(ctx, params, output)
        alpha = params.alpha if train.labels is not None else 0.0
        distiller = Distiller(module, output, classification, params.temperature, alpha, probabilities)
        params_list = module.parameters()
        opt = _optimizer(params_list, params)
        evaluation = _eval_split(ctx)
        before = _student_metric(student, ctx.scratch / "student.untrained.onnx", evaluation, output)
        trained = distiller.fit(opt, train, val, params=params, progress=ctx.progress)
        warnings.extend(trained.warnings)

        ctx.progress(0.72, "writing the trained weights into the student's graph")
        module.write_back(student)
        dst = ctx.out_dir / "model.distilled.onnx"
        onnx.save(student, str(dst))
        probe = {k: v[:64] for k, v in (val.feeds if val is not None else train.feeds).items()}
        difference = max_disagreement(str(dst), module, probe)
        if difference > INTERPRETER_TOLERANCE:
            raise EngineError(
                ErrorCode.DISTILL_FAILED,
                f"ONNX Runtime on the trained student differs from the training interpreter by {difference:.3g}",
            )
        out_info = check_and_inspect(str(dst))
        curves = _curves(trained.history, params, warnings)
        comparison = compare(
            inputs.model_path,
            str(dst),
            outputs=[o.name for o in info.outputs],
            evaluation=evaluation,
            prediction_output=output,
            batch_sizes=params.batch_sizes,
            threads=sorted({1, min(params.threads, inputs.max_threads)}),
            runs=params.runs,
            warmup=3,
            progress=lambda f, stage: ctx.progress(0.75 + 0.23 * f, stage),
        )
        if "eval" not in inputs.datasets and "validation" not in inputs.datasets:
            warnings.append("no validation or eval dataset: the comparison is measured on the training data")
        if out_info.parameter_count >= info.parameter_count and not params.student_model_id:
            warnings.append("the student is not smaller than the teacher")
        report = DistillReport(
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
            epochs_run=len(trained.history["loss"]),
            best_epoch=trained.best_epoch,
            stopped_early=trained.stopped_early,
            diverged_at_epoch=trained.diverged_at,
            training_seconds=round(trained.seconds, 3),
            history=trained.history,
            learning_curves=curves,
            interpreter_max_difference=difference,
            config=params.model_dump(mode="json"),
        )
        artifact = ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model="distilled",
            model_info=out_info.model_dump(mode="json"),
        )
        return Outcome(report, [artifact])


def _optimizer(trainable: list[Any], params: DistillParams) -> Any:
    import torch

    if params.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    return torch.optim.SGD(trainable, lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay)


def _curves(
    history: dict[str, list[float | None]], params: DistillParams, warnings: list[str]
) -> dict[str, Any] | None:
    """The training history read by the shared learning-curve analysis (what diagnose does with a history)."""
    if not history["loss"]:
        return None
    return analyse_history(
        {k: [math.nan if v is None else v for v in vals] for k, vals in history.items()},
        warnings,
        monitor=params.monitor if params.monitor in history else None,
        min_delta=params.min_delta,
        patience=params.patience,
    ).model_dump(mode="json")


def _student(
    ctx: RunContext, params: DistillParams
) -> tuple[onnx.ModelProto, list[dict[str, Any]], list[dict[str, Any]], str]:
    """The student graph: the model named by student_model_id, or the teacher structurally pruned."""
    if params.student_model_id:
        if ctx.inputs.models["student"].info.parameter_count >= ctx.info.parameter_count:
            ctx.warnings.append("the student has at least as many parameters as the teacher (allowed)")
        return onnx.load(ctx.inputs.models["student"].path), [], [], f"model {params.student_model_id}"
    ctx.progress(0.02, "making the student (structured pruning of the teacher)")
    student = onnx.load(ctx.inputs.model_path)
    rows, alone = prune_structured(student, params.ratio, None, "l1", set(), set(), coupled=params.coupled)
    if not rows:
        reasons = "; ".join(f"{a['layer']}: {a['why']}" for a in alone[:10])
        raise EngineError(
            ErrorCode.NOTHING_TO_PRUNE, f"no layer of the teacher could be pruned to make a student ({reasons})"
        )
    return student, rows, alone, f"structured pruning of the teacher, ratio {params.ratio} (L1)"


def _splits(ctx: RunContext, params: DistillParams, output: str) -> tuple[Any, Any, bool, bool]:
    """Train and validation splits with the teacher's outputs as soft targets; whether the task is classification
    and whether the output is probabilities (the student's is trained through its log then)."""
    import torch

    from engine.training.loop import Split

    inputs = ctx.inputs
    x_train, y_train = inputs.feeds("train")
    t_train = _teacher_outputs(inputs.model_path, x_train, output)
    label_summary = inputs.datasets["train"].summary.label
    classification = (
        (label_summary.kind == "classification") if label_summary else t_train.ndim == 2 and t_train.shape[1] > 1
    )
    n_classes = class_probabilities(t_train[:1])[0].shape[1] if classification else 0
    probabilities = classification and class_probabilities(t_train)[1] == "probabilities"

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

    train = Split(x_train, labels(y_train, "train"), soft(t_train))
    val = None
    if "validation" in inputs.datasets:
        x_val, y_val = inputs.feeds("validation")
        val = Split(x_val, labels(y_val, "validation"), soft(_teacher_outputs(inputs.model_path, x_val, output)))
    return train, val, classification, probabilities


def _eval_split(ctx: RunContext) -> EvalData:
    """What the student is compared on: eval, else validation, else train."""
    datasets = ctx.inputs.datasets
    role = "eval" if "eval" in datasets else ("validation" if "validation" in datasets else "train")
    feeds, labels = ctx.inputs.feeds(role)
    summary = datasets[role].summary
    return EvalData(feeds, labels, summary, task_of(summary))


def _student_metric(student: onnx.ModelProto, path: Path, evaluation: EvalData, output: str) -> dict[str, Any]:
    """The untrained student's primary metric on the eval data (what distillation starts from)."""
    if evaluation.labels is None or evaluation.summary is None:
        return {"metric": None, "value": None}
    onnx.save(student, str(path))
    session = make_session(str(path), 1)
    out = run_batched(session, feeds_for(session, evaluation.feeds), output, 256)
    return primary_metric(out, evaluation.labels, evaluation.summary)


KIND = Distill()
