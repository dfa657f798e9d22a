"""The `prune` job: remove what the model does not need, and measure what that costs against the original.

Methods (one module each beside this file): `simplify` (graph clean-up that keeps the outputs), `magnitude`
(unstructured sparsity), `structured` (whole neurons and conv channels, engine.pruning.structured) and
`sensitivity` (per-layer structured ratios chosen within an accuracy budget).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import pick_output
from engine.core.kind import ArtifactOut, Kind, Outcome, ReportBase, RunContext
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo, check_and_inspect, refuse_attribute_weights, refuse_non_tensor_outputs
from engine.kinds.prune.magnitude import magnitude_prune
from engine.kinds.prune.params import PruneParams
from engine.kinds.prune.sensitivity import Judge, sensitivity_prune
from engine.kinds.prune.simplify import max_difference, simplify_model
from engine.kinds.prune.structured import structured_prune
from engine.measure.comparison import Comparison, compare_with_params
from engine.measure.data import EvalData, eval_data, feeds_for
from engine.runtime import fixed_batch, make_session

CONTROL_FLOW = {"If", "Loop", "Scan"}
SIMPLIFY_CHECK_SAMPLES = 64


class PruneReport(ReportBase):
    kind: Literal["prune"] = "prune"
    method: str
    config: dict[str, Any]
    comparison: Comparison
    parameters: dict[str, int] = Field(description="Elements in initializers, before and after")
    nonzero_parameters: dict[str, int] = Field(description="Non-zero initializer elements, before and after")
    macs_per_sample: dict[str, int | None]
    gzip_size_bytes: dict[str, int] = Field(description="The files compressed with gzip -6: sparsity shows here")
    nodes: dict[str, int]
    op_changes: dict[str, int] = Field(description="Op type -> change in node count (simplify)")
    layers: list[dict[str, Any]] = Field(description="magnitude: per-layer sparsity (simplify: see op_changes)")
    left_alone: list[dict[str, str]] = Field(description="Layers not pruned, and why")
    max_abs_difference: float | None = Field(
        default=None, description="simplify: largest output difference against the original on sample inputs"
    )
    sensitivity: dict[str, Any] | None = Field(
        default=None,
        description="sensitivity: each layer pruned alone at each ratio (metric, drop, MACs removed), the chosen "
        "per-layer ratios and whether the combination met the budget",
    )
    output_model: dict[str, Any]
    seconds: float


def _gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6))


def _nonzero(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        total += int(np.count_nonzero(a)) if a.dtype.kind in "fiub" else a.size
    return total


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


class Prune(Kind[PruneParams, PruneReport]):
    name = "prune"
    Params = PruneParams
    Report = PruneReport
    roles = ("eval",)
    queue = "measure"

    def threads(self, params: PruneParams) -> int:
        return max(params.threads) if params.threads else 1

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: PruneParams) -> None:
        if params.method == "sensitivity" and "eval" not in summaries:
            raise EngineError(
                ErrorCode.MISSING_DATASET, "the sensitivity scan measures on an eval (or test, or validation) dataset"
            )
        if params.method in ("magnitude", "structured") and params.ratio is None and not params.ratios:
            raise EngineError(ErrorCode.MISSING_PARAM, f"{params.method} pruning needs params.ratio or params.ratios")
        if params.method == "structured" and params.criterion == "activation" and "eval" not in summaries:
            raise EngineError(
                ErrorCode.MISSING_DATASET, "criterion 'activation' needs an eval (or test, or validation) dataset"
            )
        if params.method == "simplify":
            refuse_non_tensor_outputs(info, "simplify (onnxscript's optimizer)")
        else:
            refuse_attribute_weights(info, ErrorCode.NOTHING_TO_PRUNE, f"{params.method} pruning has nothing to remove")
        if "eval" in summaries:
            binding.plan(info.inputs, summaries["eval"])
        pick_output(info, params.output)

    def detail(self, report: PruneReport) -> str:
        return (
            f"{report.method}: {report.nodes.get('original')} -> {report.nodes.get('pruned')} nodes, parameters "
            f"{report.parameters.get('original')} -> {report.parameters.get('pruned')}"
        )

    def run(self, ctx: RunContext, params: PruneParams) -> Outcome[PruneReport]:
        info, progress = ctx.info, ctx.progress
        src, dst = Path(ctx.inputs.model_path), ctx.out_dir / f"model.{params.method}.onnx"
        forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
        original = onnx.load(str(src))
        _control_flow_warning(ctx.warnings, original, params.method)
        evaluation = eval_data(ctx.inputs, params.eval_max_samples, forced or 64, ctx.warnings)

        progress(0.05, f"pruning ({params.method})")
        started = time.perf_counter()
        config, layers, alone, sensitivity = _prune(ctx, params, evaluation, dst, forced)
        seconds = time.perf_counter() - started
        try:
            out_info = check_and_inspect(str(dst))
        except EngineError as exc:
            raise EngineError(ErrorCode.PRUNE_FAILED, f"the pruned model is not valid: {exc.detail}") from None
        pruned = onnx.load(str(dst))
        if [o.name for o in pruned.graph.output] != [o.name for o in original.graph.output]:
            raise EngineError(ErrorCode.PRUNE_FAILED, "the graph outputs changed; the result is refused")
        if params.method in ("structured", "sensitivity"):
            _check_shapes(src, dst, evaluation, forced)
        difference = _check_simplified(ctx, params, evaluation, dst, forced) if params.method == "simplify" else None
        _result_warning(ctx.warnings, params.method, sensitivity)
        comparison = compare_with_params(
            src, dst, ctx.inputs, evaluation, params, lambda f, stage: progress(0.3 + 0.65 * f, stage)
        )
        before_ops, after_ops = _ops(original), _ops(pruned)
        report = PruneReport(
            method=params.method,
            config=config,
            comparison=comparison,
            parameters={"original": info.parameter_count, "pruned": out_info.parameter_count},
            nonzero_parameters={"original": _nonzero(original), "pruned": _nonzero(pruned)},
            macs_per_sample={"original": info.macs_per_sample, "pruned": out_info.macs_per_sample},
            gzip_size_bytes={"original": _gzip_size(src), "pruned": _gzip_size(dst)},
            nodes={"original": len(original.graph.node), "pruned": len(pruned.graph.node)},
            op_changes={
                op: after_ops.get(op, 0) - before_ops.get(op, 0)
                for op in sorted(set(before_ops) | set(after_ops))
                if after_ops.get(op, 0) != before_ops.get(op, 0)
            },
            layers=layers,
            left_alone=alone,
            max_abs_difference=difference,
            sensitivity=sensitivity,
            output_model={
                "filename": dst.name,
                "size_bytes": dst.stat().st_size,
                "info": out_info.model_dump(mode="json"),
            },  # fmt: skip
            seconds=round(seconds, 3),
        )
        artifact = ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model=params.method,
            model_info=out_info.model_dump(mode="json"),
        )
        return Outcome(report, [artifact])


def _control_flow_warning(warnings: list[str], model: onnx.ModelProto, method: str) -> None:
    flow = sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW})
    if not flow:
        return
    if method == "simplify":
        warnings.append(
            f"the graph has control flow ({', '.join(flow)}): the optimizer simplifies inside their bodies too, "
            "and the outputs were checked only along the branches the sample inputs take"
        )
    else:
        warnings.append(f"the graph has control flow ({', '.join(flow)}): their bodies are left untouched")


def _prune(
    ctx: RunContext, params: PruneParams, evaluation: EvalData, dst: Path, forced: int | None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    """Run the method: (config, pruned layers, layers left alone, the sensitivity block)."""
    src = Path(ctx.inputs.model_path)
    if params.method == "simplify":
        try:
            return simplify_model(src, dst, params.fold_size_limit), [], [], None
        except Exception as exc:  # onnxscript's optimizer failing on the user's graph: a known condition
            raise EngineError(
                ErrorCode.PRUNE_FAILED, f"simplify failed: {type(exc).__name__}: {str(exc)[:400]}"
            ) from None
    if params.method == "structured":
        return (*structured_prune(src, dst, params, evaluation.feeds, ctx.scratch), None)
    if params.method == "sensitivity":
        judge = Judge(src, evaluation, pick_output(ctx.info, params.output), params, forced or 256)
        return sensitivity_prune(
            src, dst, params, judge, ctx.scratch, lambda f, stage: ctx.progress(0.05 + 0.25 * f, stage)
        )
    return (*magnitude_prune(src, dst, params), None)


def _check_shapes(src: Path, dst: Path, evaluation: EvalData, forced: int | None) -> None:
    """ONNX Runtime runs the pruned model on eval samples, and every output keeps its shape: never a wrong model."""
    sample = {k: v[: forced or 4] for k, v in evaluation.feeds.items()}
    shapes = []
    for path in (src, dst):
        session = make_session(str(path), 1)
        try:
            shapes.append([np.shape(o) for o in session.run(None, feeds_for(session, sample))])
        except Exception as exc:
            raise EngineError(
                ErrorCode.PRUNE_FAILED, f"ONNX Runtime cannot run the pruned model: {exc}"[:500]
            ) from None
    if shapes[0] != shapes[1]:
        raise EngineError(ErrorCode.PRUNE_FAILED, f"the output shapes changed from {shapes[0]} to {shapes[1]}")


def _check_simplified(
    ctx: RunContext, params: PruneParams, evaluation: EvalData, dst: Path, forced: int | None
) -> float:
    """The simplified model must give the original's outputs (within tolerance) and not grow the file."""
    src = Path(ctx.inputs.model_path)
    ctx.progress(0.2, "checking the simplified model against the original")
    sample = {k: v[: forced or SIMPLIFY_CHECK_SAMPLES] for k, v in evaluation.feeds.items()}
    difference = max_difference(src, dst, sample, [o.name for o in ctx.info.outputs], forced or 64)
    if difference > params.tolerance:
        raise EngineError(
            ErrorCode.PRUNE_FAILED,
            f"the simplified model's outputs differ from the original's by {difference:.3g} (relative), more "
            f"than the tolerance {params.tolerance:g}: refused",
        )
    if dst.stat().st_size > src.stat().st_size * 1.001 + 1024:  # a few bytes of metadata are not folding
        raise EngineError(
            ErrorCode.PRUNE_FAILED,
            f"simplification made the file bigger ({src.stat().st_size} -> {dst.stat().st_size} bytes); "
            "lower params.fold_size_limit",
        )
    return difference


def _result_warning(warnings: list[str], method: str, sensitivity: dict[str, Any] | None) -> None:
    if sensitivity is not None and not sensitivity["chosen_ratios"]:
        warnings.append(
            f"no layer can be pruned within the budget ({sensitivity['budget']}) at the ratios tried: the model is "
            "unchanged; see the scan for what each layer costs"
        )
    elif method in ("structured", "sensitivity"):
        warnings.append(
            "structured pruning without fine-tuning loses accuracy (see the change below); distillation recovers "
            "it: a distill job with this model as the student (params.student_model_id) and the original as the "
            "teacher"
        )
    elif method == "magnitude":
        warnings.append(
            "unstructured sparsity: the zeros are still stored densely and computed, so the raw file and the "
            "latency barely change; the gzip size shows what a sparse format or compression would save"
        )


KIND = Prune()
