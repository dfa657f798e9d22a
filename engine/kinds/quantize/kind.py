"""The `quantize` job: ONNX Runtime dynamic or static quantization, or fp16 conversion, measured against the
original on this machine (engine.measure.comparison) before it is handed back.

Defaults follow what was measured (../shared/ONNX-NOTES.md): static uses unsigned int8 activations (U8S8,
several times faster than ORT's signed default on CNNs with VNNI), dynamic quantizes only MatMul/Gemm
(dynamically quantized convolutions run slower than fp32). Mode `auto`, an accuracy-aware search, is
described in auto.py beside this file.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from engine import binding
from engine.bundle import check_and_inspect_bundle, fits_whole, model_bytes, pack, whole_limit_text
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import pick_output
from engine.core.kind import ArtifactOut, Kind, Outcome, ReportBase, RunContext
from engine.datasets import DatasetSummary
from engine.inspect import ML_HINT, ModelInfo, check_and_inspect, ml_operators
from engine.kinds.quantize.auto import AutoSearch, QuantizeTrial, Search
from engine.kinds.quantize.calibration import Reader
from engine.kinds.quantize.modes import QUANTIZED_OPS, is_quantized, left_in_float, quantize_model
from engine.kinds.quantize.nodes import name_nodes, overflowing_nodes
from engine.kinds.quantize.params import QuantizeParams
from engine.kinds.quantize.sqnr import layer_errors
from engine.measure.comparison import Comparison, compare_with_params
from engine.measure.data import EvalData, eval_data
from engine.measure.fidelity import default_spec
from engine.runtime import fixed_batch


class QuantizeReport(ReportBase):
    kind: Literal["quantize"] = "quantize"
    mode: str = Field(
        description="The mode of the model produced (auto: of the chosen trial, or of the best attempt when the "
        "original is kept)"
    )
    handed_back: Literal["quantized", "original"] = Field(
        default="quantized",
        description="original: auto found no trial that meets the goal and beats the original on the objective; "
        "nothing is registered as a model, the comparison shows the best attempt (artifact role best_attempt)",
    )
    requested_mode: str
    config: dict[str, Any] = Field(description="The settings actually used (defaults filled in)")
    comparison: Comparison
    left_in_float: list[str] = Field(description="Weighted nodes that were not quantized (name: op type)")
    quantization_seconds: float
    calibration_samples: int | None = None
    output_model: dict[str, Any] = Field(description="File name, size and inspection of the produced model")
    usable: bool = Field(description="False when the produced model's outputs contain inf/NaN")
    layer_errors: dict[str, Any] | None = Field(
        default=None,
        description="static QDQ: the tensors that lose most, as SQNR in dB against the float model (lower is "
        "worse): activations and weights, worst first",
    )
    auto: AutoSearch | None = Field(default=None, description="auto: every trial, the goal and the choice")


class Quantize(Kind[QuantizeParams, QuantizeReport]):
    name = "quantize"
    Params = QuantizeParams
    Report = QuantizeReport
    roles = ("eval", "calibration", "train")
    queue = "measure"
    external_data = True  # weight_only (rtn) only: streamed one tensor at a time (reads_external_data)

    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        from engine.kinds.quantize.charts import charts

        return charts(report)

    def needs(self, params: QuantizeParams) -> set[str]:
        # /v1/kinds asks with model_construct() (no mode): what every quantize job needs, which is nothing
        hqq = getattr(params, "mode", None) == "weight_only" and params.weight_only_algorithm == "hqq"
        return {"torch"} if hqq else set()

    def threads(self, params: QuantizeParams) -> int:
        return max(params.threads) if params.threads else 1

    def budget_seconds(self, params: QuantizeParams) -> float | None:
        return params.max_seconds if params.mode == "auto" else None

    def with_budget(self, params: QuantizeParams, seconds: float) -> QuantizeParams:
        return params.model_copy(update={"max_seconds": seconds})

    def reads_external_data(self, params: QuantizeParams) -> bool:
        return _streamed(params)  # the other modes get a bundle as one file (Kind.execute)

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: QuantizeParams) -> None:
        if is_quantized(info):
            found = sorted(op for op in info.op_histogram if op.split(":")[-1] in QUANTIZED_OPS)
            raise EngineError(
                ErrorCode.ALREADY_QUANTIZED, f"the model is already quantized (it has {', '.join(found)})"
            )
        if info.external_data_bytes and not _streamed(params) and not fits_whole(info):
            raise EngineError(
                ErrorCode.UNSUPPORTED,
                f"{params.mode}{' hqq' if params.mode == 'weight_only' else ''} quantization loads the whole model, up "
                f"to {whole_limit_text()}; this one has {info.initializer_bytes:,}: weight_only (rtn) quantizes it "
                "one tensor at a time",
            )
        if info.initializer_bytes == 0 or info.parameter_count == 0:
            ml = ml_operators(info)
            raise EngineError(
                ErrorCode.NOTHING_TO_QUANTIZE,
                "the model has no weights to quantize"
                + (
                    f": its ops {ml[:10]} are scikit-learn-style ai.onnx.ml operators whose weights are node "
                    f"attributes, which ONNX Runtime's quantizer does not touch ({ML_HINT})"
                    if ml
                    else ""
                ),
            )
        if params.mode == "weight_only" and not {"MatMul", "Gemm"} & {op.split(":")[-1] for op in info.op_histogram}:
            raise EngineError(
                ErrorCode.NOTHING_TO_QUANTIZE,
                "weight_only quantizes MatMul and Gemm weights (ORT's MatMulNBits) and the model has neither "
                "(convolutions are not supported by it): use dynamic or static",
            )
        if params.mode == "auto" and "eval" not in summaries:
            raise EngineError(
                ErrorCode.MISSING_DATASET,
                "auto quantization measures its goal on an eval (or test, or validation) dataset",
            )
        source = "calibration" if "calibration" in summaries else "train" if "train" in summaries else None
        if params.mode == "static" and source is None:
            raise EngineError(ErrorCode.MISSING_DATASET, "static quantization needs a calibration (or train) dataset")
        if params.mode in ("static", "auto") and source is not None:
            binding.plan(info.inputs, summaries[source])
        if "eval" in summaries:
            binding.plan(info.inputs, summaries["eval"])
        output = pick_output(info, params.output)
        default_spec(info, output, params.pooling, params.mask_input)  # the mask input exists, the pooling fits
        shape = next(o.shape for o in info.outputs if o.name == output)
        if params.min_top1_agreement is not None and shape is not None and len(shape) != 2:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_MODEL,
                f"min_top1_agreement needs a classifier-like output [batch, classes]; {output!r} has rank {len(shape)}",
            )

    def detail(self, report: QuantizeReport) -> str:
        auto = report.auto
        if auto is None:
            return f"{report.mode} quantization"
        if auto.kept_original:
            return f"kept the original after {len(auto.trials)} configurations: {auto.verdict}"
        return f"chose {report.mode} among {len(auto.trials)} configurations; its own goal met"

    def run(self, ctx: RunContext, params: QuantizeParams) -> Outcome[QuantizeReport]:
        info, progress = ctx.info, ctx.progress
        src, dst = Path(ctx.inputs.model_path), ctx.out_dir / "model.quant.onnx"
        if info.external_data_bytes:  # streamed (reads_external_data): a bundle out, built in scratch, as a tar
            dst = ctx.scratch / "quantized" / "model.onnx"
            dst.parent.mkdir()
        forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
        batch = forced or 16  # calibration batches
        reader, feeds = _calibration(ctx, params, batch)
        evaluation = eval_data(ctx.inputs, params.eval_max_samples, forced or 64, ctx.warnings)

        auto, mode = None, str(params.mode)
        if params.mode == "auto":
            # timed at the batch the params name (it was the calibration batch, 16, not the documented 1)
            auto, chosen = _auto(ctx, params, reader, evaluation, dst, forced or params.trial_batch_size)
            mode, config, seconds = chosen.mode, chosen.config, chosen.quantization_seconds or 0.0
        else:
            progress(0.1, "calibrating and quantizing" if params.mode == "static" else "converting")
            started = time.perf_counter()
            try:
                config = quantize_model(src, dst, params, reader, ctx.scratch)
            except EngineError:
                raise
            except Exception as exc:  # ORT's quantizer failing on the user's model: a known condition
                raise EngineError(
                    ErrorCode.QUANTIZATION_FAILED, f"ONNX Runtime's quantizer failed: {str(exc)[:500]}"
                ) from None
            seconds = time.perf_counter() - started
        progress(0.6, "checking the produced model")
        try:
            out_info = _inspect_output(dst, ctx.out_dir)
        except EngineError as exc:
            raise EngineError(ErrorCode.QUANTIZATION_FAILED, f"the produced model is not valid: {exc.detail}") from None
        errors = _error_table(ctx, params, mode, config, feeds, dst, batch)
        floats = _notes(ctx.warnings, mode, config, dst)
        comparison = compare_with_params(
            src,
            dst,
            ctx.inputs,
            evaluation,
            params,
            lambda f, stage: progress(0.65 + 0.33 * f, stage),
            default_spec(info, pick_output(info, params.output), params.pooling, params.mask_input),
        )
        bad = _overflow_warning(ctx, mode, comparison, evaluation)
        report = QuantizeReport(
            mode=mode,
            requested_mode=params.mode,
            config=config,
            comparison=comparison,
            left_in_float=floats,
            quantization_seconds=round(seconds, 3),
            calibration_samples=reader.samples if reader and mode == "static" else None,
            output_model={
                "filename": dst.name,
                "size_bytes": model_bytes(dst),
                "info": out_info.model_dump(mode="json"),
            },  # fmt: skip
            usable=not bad,
            layer_errors=errors,
            auto=auto,
        )
        artifact = _artifact(report, dst, ctx.out_dir, auto is not None and auto.kept_original, out_info, params)
        return Outcome(report, [artifact])


def _streamed(params: QuantizeParams) -> bool:
    """The one mode that reads a bundle one tensor at a time (engine.kinds.quantize.streamed)."""
    return params.mode == "weight_only" and params.weight_only_algorithm == "rtn"


def _inspect_output(dst: Path, out_dir: Path) -> ModelInfo:
    """A bundle (built outside out_dir, see run) is checked as bundles are; a single file as uploads are."""
    if dst.parent != out_dir:
        return check_and_inspect_bundle(str(dst), str(dst.parent), runtime_max_bytes=1 << 62)
    return check_and_inspect(str(dst))


def _artifact(
    report: QuantizeReport, dst: Path, out_dir: Path, kept: bool, info: ModelInfo, params: QuantizeParams
) -> ArtifactOut:
    """The produced model as the job's artifact: the .onnx file, or a bundle (external data) packed as a tar."""
    if dst.parent != out_dir:
        dst = pack(dst.parent, out_dir / ("best_attempt.tar" if kept else "model.quant.tar"))
    elif kept:
        dst = dst.rename(dst.with_name("best_attempt.onnx"))
    if kept:
        report.handed_back = "original"
    report.output_model["filename"] = dst.name
    return ArtifactOut(
        role="best_attempt" if kept else "model",
        filename=dst.name,
        media_type="application/x-tar" if dst.suffix == ".tar" else "application/octet-stream",
        register_as_model=None if kept else report.mode if params.mode != "auto" else f"auto-{report.mode}",
        model_info=info.model_dump(mode="json"),
    )


def _calibration(
    ctx: RunContext, params: QuantizeParams, batch: int
) -> tuple[Reader | None, dict[str, np.ndarray] | None]:
    """The calibration reader (the `calibration` dataset, else `train`) for static and auto modes."""
    datasets = ctx.inputs.datasets
    role = "calibration" if "calibration" in datasets else "train" if "train" in datasets else None
    if role is None or params.mode not in ("static", "auto"):
        return None, None
    ctx.progress(0.02, f"loading calibration data ({role})")
    feeds, _ = ctx.inputs.feeds(role, params.calibration_max_samples)  # the rest of the dataset is never read
    reader = Reader(feeds, batch, params.calibration_max_samples, params.calibration_method != "minmax")
    if reader.samples < 32:
        ctx.warnings.append(
            f"only {reader.samples} calibration samples: ranges may not cover real inputs "
            "(100-1000 representative samples are typical)"
        )
    return reader, feeds


def _auto(
    ctx: RunContext, params: QuantizeParams, reader: Reader | None, evaluation: EvalData, dst: Path, batch: int
) -> tuple[AutoSearch, QuantizeTrial]:
    """Run the auto search; the chosen model ends up at dst. Returns the report block and the chosen trial."""
    work = ctx.scratch / "auto"
    work.mkdir(exist_ok=True)
    warnings = ctx.warnings
    if reader is None:
        warnings.append("no calibration or train dataset: static quantization was not tried")
    search = Search(
        src=name_nodes(Path(ctx.inputs.model_path), work / "named.onnx"),
        info=ctx.info,
        params=params,
        reader=reader,
        evaluation=evaluation,
        prediction_output=pick_output(ctx.info, params.output),
        batch=batch,
        work=work,
        progress=lambda f, stage: ctx.progress(0.05 + 0.55 * f, stage),
    )
    block, path, chosen = search.run()
    if chosen is None or path is None:
        failures = "; ".join(f"{t.name}: {t.error}" for t in block.trials)
        raise EngineError(ErrorCode.QUANTIZATION_FAILED, f"no auto trial produced a usable model: {failures[:800]}")
    shutil.move(str(path), str(dst))
    if block.kept_original:
        warnings.append(
            f"goal not met, the original is kept: {block.verdict} (nothing is registered as a model; the best "
            f"attempt is the best_attempt artifact; the search ended because {block.stopped_because})"
        )
    failed = [t for t in block.trials if t.status == "failed"]
    if failed:
        warnings.append(f"{len(failed)} trial(s) failed and were skipped: " + "; ".join(t.name for t in failed))
    return block, chosen


def _error_table(
    ctx: RunContext,
    params: QuantizeParams,
    mode: str,
    config: dict[str, Any],
    feeds: dict[str, np.ndarray] | None,
    dst: Path,
    batch: int,
) -> dict[str, Any] | None:
    if mode != "static" or config.get("quant_format") != "QDQ" or not params.error_table or feeds is None:
        return None
    ctx.progress(0.62, "measuring the error of each tensor")
    try:
        return layer_errors(Path(ctx.inputs.model_path), dst, feeds, batch, ctx.scratch)
    except Exception as exc:  # a diagnostic: its failure must not fail the job
        ctx.warnings.append(f"the per-tensor error table could not be computed: {str(exc)[:200]}")
        return None


def _notes(warnings: list[str], mode: str, config: dict[str, Any], dst: Path) -> list[str]:
    """Warnings on how the model was quantized; returns the weighted nodes left in float."""
    if config.get("pre_process_skipped"):
        warnings.append(config["pre_process_skipped"])
    floats = left_in_float(dst) if mode != "fp16" else []
    if floats:
        warnings.append(
            f"{len(floats)} weighted node(s) left in float (not supported by ORT's quantizer for this "
            f"mode, or excluded): {', '.join(floats[:10])}{' ...' if len(floats) > 10 else ''}"
        )
    if mode == "fp16":
        warnings.append(
            "fp16 halves the size but is not faster on CPUs (ORT's CPU kernels mostly compute in "
            "fp32 and add casts); see the measured latency below"
        )
    return floats


def _overflow_warning(ctx: RunContext, mode: str, comparison: Comparison, evaluation: EvalData) -> list[str]:
    """The outputs with inf/NaN values, with a warning that says which nodes to keep in float."""
    bad = [f.output for f in comparison.fidelity if f.non_finite_values]
    if not bad:
        return bad
    hint = "block the overflowing ops (op_block_list) or nodes (nodes_to_exclude), or keep float32"
    if mode == "fp16":
        try:
            nodes = overflowing_nodes(Path(ctx.inputs.model_path), evaluation.feeds, ctx.scratch)
            if nodes:
                hint = f"these nodes compute values beyond fp16's range, exclude them: {', '.join(nodes[:20])}"
        except Exception as exc:  # a hint only
            hint += f" (finding the overflowing nodes failed: {str(exc)[:200]})"
    ctx.warnings.append(
        f"the produced model's outputs contain inf/NaN ({', '.join(bad)}): likely fp16 overflow; {hint}"
    )
    return bad


KIND = Quantize()
