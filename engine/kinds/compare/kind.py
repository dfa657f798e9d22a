"""The `compare` job kind: two models of the tenant with one signature, measured side by side on the shared
harness (engine.measure.comparison) — the comparison block alone, for a model optimized elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from engine import binding
from engine.core.inputs import pick_output
from engine.core.kind import BatchSize, Kind, Outcome, ReportBase, RunContext, StrictParams, ThreadCount
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.measure.comparison import Comparison, check_same_signature, compare_with_params
from engine.measure.data import eval_data
from engine.runtime import fixed_batch


class CompareParams(StrictParams):
    other_model_id: str = Field(description="The model measured against the job's model (the candidate)")
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    batch_sizes: list[BatchSize] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[ThreadCount] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000)
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1, description="Eval samples used for metrics")


class CompareReport(ReportBase):
    kind: Literal["compare"] = "compare"
    other_model_id: str
    comparison: Comparison = Field(description="original = the job's model, candidate = other_model_id")
    parameters: dict[str, int]
    macs_per_sample: dict[str, int | None]
    nodes: dict[str, int]
    op_types_only_in: dict[str, list[str]] = Field(description="Op types one model has and the other has not")


class Compare(Kind[CompareParams, CompareReport]):
    name = "compare"
    external_data = True  # ONNX Runtime sessions from the path: the data files are read beside the graph
    Params = CompareParams
    Report = CompareReport
    roles = ("eval",)
    queue = "measure"

    def threads(self, params: CompareParams) -> int:
        return max(params.threads) if params.threads else 1

    def other_models(self, params: CompareParams) -> dict[str, str]:
        return {"other": params.other_model_id}

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: CompareParams) -> None:
        if "eval" in summaries:
            binding.plan(info.inputs, summaries["eval"])
        pick_output(info, params.output)

    def validate_models(self, info: ModelInfo, others: dict[str, ModelInfo], params: CompareParams) -> None:
        check_same_signature(info, others["other"], names=("model", "other model"))

    def run(self, ctx: RunContext, params: CompareParams) -> Outcome[CompareReport]:
        inputs = ctx.inputs
        info, other = inputs.model_info, inputs.models["other"].info
        forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
        evaluation = eval_data(inputs, params.eval_max_samples, forced or 64, ctx.warnings)
        comparison = compare_with_params(
            Path(inputs.model_path), Path(inputs.models["other"].path), inputs, evaluation, params, ctx.progress
        )
        if comparison.size_bytes.original == comparison.size_bytes.candidate and all(
            f.max_abs_error == 0 for f in comparison.fidelity
        ):
            ctx.warnings.append("the two models give identical outputs and have the same size: probably the same model")
        ops_a, ops_b = set(info.op_histogram), set(other.op_histogram)
        report = CompareReport(
            other_model_id=params.other_model_id,
            comparison=comparison,
            parameters={"original": info.parameter_count, "candidate": other.parameter_count},
            macs_per_sample={"original": info.macs_per_sample, "candidate": other.macs_per_sample},
            nodes={"original": info.node_count, "candidate": other.node_count},
            op_types_only_in={"original": sorted(ops_a - ops_b), "candidate": sorted(ops_b - ops_a)},
        )
        return Outcome(report)


KIND = Compare()
