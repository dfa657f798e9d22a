"""The `evaluate` job: task metrics of a model on a labeled dataset, plus sample count and throughput."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import pick_output
from engine.core.kind import ArtifactOut, Kind, Outcome, ReportBase, RunContext, StrictParams
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.measure.metrics import Predictions, Task, wilson_ci95
from engine.runtime import fixed_batch, make_session, run_batched


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


class Evaluate(Kind[EvaluateParams, EvaluateReport]):
    name = "evaluate"
    external_data = True  # ONNX Runtime sessions from the path: the data files are read beside the graph
    Params = EvaluateParams
    Report = EvaluateReport
    roles = ("eval",)
    required = ("eval",)
    queue = "measure"

    def threads(self, params: EvaluateParams) -> int:
        return params.threads

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: EvaluateParams) -> None:
        summary = summaries["eval"]
        if summary.kind != "samples":
            raise EngineError(ErrorCode.INCOMPATIBLE_DATA, "the eval dataset is a training history, not samples")
        if summary.label is None:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_DATA, "evaluate needs a labeled eval dataset (send label=... on upload)"
            )
        pick_output(info, params.output)
        binding.plan(info.inputs, summary)

    def run(self, ctx: RunContext, params: EvaluateParams) -> Outcome[EvaluateReport]:
        inputs, progress, warnings = ctx.inputs, ctx.progress, ctx.warnings
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
        batch = params.batch_size
        forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
        if forced is not None and forced != batch:
            warnings.append(f"the model's inputs have a fixed batch of {forced}; batch_size {batch} was replaced")
            batch = forced
            if n % batch:
                raise EngineError(
                    ErrorCode.INCOMPATIBLE_DATA, f"{n} samples do not split into the model's fixed batch of {batch}"
                )
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
        predicted = Predictions(task, out, y, ds.summary)
        metrics = predicted.metrics()
        ci = class_count = confusion = None
        if task == "classification":
            class_count = predicted.values.shape[1]
            ci = wilson_ci95(int(round((metrics["accuracy"] or 0.0) * n)), n)
            predictions = predicted.values.argmax(axis=1)
            if class_count <= 50:
                confusion = np.zeros((class_count, class_count), dtype=np.int64)
                np.add.at(confusion, (predicted.target, predictions), 1)
        else:
            if metrics["r2"] is None:
                warnings.append("r2 is undefined: the labels are constant")
            predictions = predicted.values
        np.savez_compressed(ctx.out_dir / "predictions.npz", output=out, prediction=predictions, label=y)
        report = EvaluateReport(
            task=task,
            sample_count=n,
            output=output,
            output_interpretation=predicted.interpretation,
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
        return Outcome(report, artifacts)


KIND = Evaluate()
