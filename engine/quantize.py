"""The `quantize` job: ONNX Runtime dynamic or static quantization, or fp16 conversion, measured against the
original on this machine (engine/compare.py) before it is handed back.

Defaults follow what was measured (../shared/ONNX-NOTES.md): static uses unsigned int8 activations (U8S8,
several times faster than ORT's signed default on CNNs with VNNI), dynamic quantizes only MatMul/Gemm
(dynamically quantized convolutions run slower than fp32). Mode `auto` (an accuracy-aware search) is not
implemented yet.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto
from pydantic import Field, field_validator

from engine import binding
from engine.compare import Comparison, compare
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.evaluate import pick_output
from engine.inspect import ModelInfo, check_and_inspect
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import fixed_batch

QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulNBits",
}
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU", "RNN", "Gather"}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


class QuantizeParams(StrictParams):
    mode: Literal["dynamic", "static", "fp16"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; static: int8 weights and "
        "activations calibrated on data (calibration dataset, else train); fp16: half-precision floats"
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool | None = Field(default=None, description="Per-channel weight scales (default: static yes)")
    reduce_range: bool = Field(default=False, description="7-bit weights (for CPUs without VNNI; costs accuracy)")
    op_types: list[str] | None = Field(
        default=None, description="Op types to quantize (default: dynamic MatMul and Gemm; static all ORT supports)"
    )
    nodes_to_exclude: list[str] = Field(default_factory=list, description="Node names to leave in float")
    quant_format: Literal["QDQ", "QOperator"] = Field(default="QDQ", description="static: graph format")
    activation_type: Literal["uint8", "int8"] = Field(default="uint8", description="static: activation type")
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    calibration_method: Literal["minmax", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90, le=100, description="percentile calibration")
    calibration_max_samples: int = Field(default=256, ge=1, le=100000)
    pre_process: bool = Field(default=False, description="static: run ORT's quant_pre_process first")
    keep_io_types: bool = Field(default=True, description="fp16: keep float32 inputs and outputs")
    op_block_list: list[str] = Field(default_factory=list, description="fp16: op types to keep in float32")
    output: str | None = Field(default=None, description="The prediction output (default: first float output)")
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[int] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000, description="Timed runs of each model per configuration")
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1, description="Eval samples used for metrics")
    error_table: bool = Field(
        default=True, description="static QDQ: per-tensor error (ORT's qdq_loss_debug) on a few calibration samples"
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 4096 for b in v):
            raise ValueError("batch sizes must be between 1 and 4096")
        return sorted(set(v))


class QuantizeReport(ReportBase):
    kind: Literal["quantize"] = "quantize"
    mode: str
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


def _is_quantized(info: ModelInfo) -> bool:
    return any(op.split(":")[-1] in QUANTIZED_OPS for op in info.op_histogram)


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: QuantizeParams) -> None:
    if _is_quantized(info):
        found = sorted(op for op in info.op_histogram if op.split(":")[-1] in QUANTIZED_OPS)
        raise EngineError("already_quantized", f"the model is already quantized (it has {', '.join(found)})")
    if info.initializer_bytes == 0 or info.parameter_count == 0:
        raise EngineError("nothing_to_quantize", "the model has no weights to quantize")
    if params.mode == "static":
        source = "calibration" if "calibration" in summaries else "train" if "train" in summaries else None
        if source is None:
            raise EngineError("missing_dataset", "static quantization needs a calibration (or train) dataset")
        binding.plan(info.inputs, summaries[source])
    if "eval" in summaries:
        binding.plan(info.inputs, summaries["eval"])
    pick_output(info, params.output)


class _Reader:
    """Calibration batches, bounded: only `max_samples` samples, `batch` at a time."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int, max_samples: int) -> None:
        n = min(next(iter(feeds.values())).shape[0], max_samples)
        self.batches = [{k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]
        if len(self.batches) % CALIB_MERGE_EVERY == 0 and next(iter(self.batches[-1].values())).shape[0] > 1:
            # ORT merges and clears collected ranges every CALIB_MERGE_EVERY batches and then fails with "No data
            # is collected" when nothing is left after the last merge: split the last batch in two.
            last = self.batches.pop()
            half = next(iter(last.values())).shape[0] // 2
            self.batches += [{k: v[:half] for k, v in last.items()}, {k: v[half:] for k, v in last.items()}]
        self.samples = n
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates the reader
        return iter(self.batches)


def _feeds(inputs: JobInputs, role: str) -> tuple[dict[str, np.ndarray], np.ndarray | None, DatasetSummary]:
    return (*inputs.feeds(role), inputs.datasets[role].summary)


def _synthetic_feeds(info: ModelInfo, n: int) -> dict[str, np.ndarray]:
    from engine.benchmark import synthetic_input

    rng = np.random.default_rng(0)
    return {s.name: synthetic_input(s, n, {}, rng) for s in info.inputs}


def left_in_float(path: Path) -> list[str]:
    """Weighted nodes whose weight is still a float initializer (not fed through DequantizeLinear)."""
    model = onnx.load(str(path))
    floats = {t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    out = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in floats:
            out.append(f"{node.name or node.output[0]}: {node.op_type}")
    return out


def toposort(graph: onnx.GraphProto) -> None:
    """Order nodes so every input is produced before it is used (stable for nodes already in order)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:  # a cycle or an input from an enclosing graph: keep the rest as it was
            ordered.extend(pending)
            break
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


CALIB_MERGE_EVERY = 8
ERROR_TABLE_SAMPLES = 8  # collecting every intermediate tensor is memory-hungry: a few samples only
ERROR_TABLE_ROWS = 20


def layer_errors(float_path: Path, qdq_path: Path, feeds: dict[str, np.ndarray], batch: int, tmp: Path) -> dict:
    """Per-tensor SQNR of the QDQ model against the float model (ORT's qdq_loss_debug), worst first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_f, aug_q = tmp / "float.aug.onnx", tmp / "qdq.aug.onnx"
    modify_model_output_intermediate_tensors(str(float_path), str(aug_f))
    modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
    acts_f = collect_activations(str(aug_f), _Reader(feeds, batch, ERROR_TABLE_SAMPLES))
    acts_q = collect_activations(str(aug_q), _Reader(feeds, batch, ERROR_TABLE_SAMPLES))
    errors = compute_activation_error(create_activation_matching(acts_q, acts_f))
    activations = sorted(
        (
            {"tensor": name, "sqnr_db": round(e["xmodel_err"], 2), "qdq_sqnr_db": round(e["qdq_err"], 2)}
            for name, e in errors.items()
            if "xmodel_err" in e
        ),
        key=lambda r: r["sqnr_db"],
    )
    matching = create_weight_matching(str(float_path), str(qdq_path))
    nonzero = {k: v for k, v in matching.items() if np.any(v["float"])}  # an all-zero tensor is exact
    weights = sorted(
        ({"weight": name, "sqnr_db": round(v, 2)} for name, v in compute_weight_error(nonzero).items()),
        key=lambda r: r["sqnr_db"],
    )
    for path in (aug_f, aug_q):
        path.unlink(missing_ok=True)
    return {
        "samples": min(ERROR_TABLE_SAMPLES, next(iter(feeds.values())).shape[0]),
        "activations": activations[:ERROR_TABLE_ROWS],
        "weights": weights[:ERROR_TABLE_ROWS],
    }


def quantize_model(src: Path, dst: Path, params: QuantizeParams, reader: _Reader | None, tmp: Path) -> dict[str, Any]:
    """Run ORT's quantizer (or the fp16 converter); returns the configuration used."""
    from onnxruntime.quantization import (  # import before onnxruntime.transformers (it edits sys.path)
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if params.mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(
            onnx.load(str(src)), keep_io_types=params.keep_io_types, op_block_list=params.op_block_list or None
        )
        toposort(model.graph)  # the converter appends its input Casts at the end of the node list
        onnx.save(model, str(dst))
        return {"keep_io_types": params.keep_io_types, "op_block_list": params.op_block_list}
    if params.mode == "dynamic":
        config = {
            "weight_type": params.weight_type,
            "per_channel": bool(params.per_channel),
            "reduce_range": params.reduce_range,
            "op_types": params.op_types or ["MatMul", "Gemm"],
            "nodes_to_exclude": params.nodes_to_exclude,
        }
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=config["op_types"],
            per_channel=config["per_channel"],
            reduce_range=params.reduce_range,
            weight_type=qtype[params.weight_type],
            nodes_to_exclude=params.nodes_to_exclude or None,
        )
        return config
    assert reader is not None
    source = src
    if params.pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source = tmp / "preprocessed.onnx"
        quant_pre_process(str(src), str(source), skip_symbolic_shape=True)
    per_channel = True if params.per_channel is None else params.per_channel
    extra: dict[str, Any] = {
        "ActivationSymmetric": params.activation_symmetric,
        "WeightSymmetric": params.weight_symmetric,
        "CalibMaxIntermediateOutputs": CALIB_MERGE_EVERY,  # bounded memory: ranges merged every few batches
    }
    method = CalibrationMethod.MinMax
    if params.calibration_method == "percentile":
        method = CalibrationMethod.Percentile
        extra["CalibPercentile"] = params.percentile
    config = {
        "quant_format": params.quant_format,
        "activation_type": params.activation_type,
        "weight_type": params.weight_type,
        "per_channel": per_channel,
        "reduce_range": params.reduce_range,
        "activation_symmetric": params.activation_symmetric,
        "weight_symmetric": params.weight_symmetric,
        "calibration_method": params.calibration_method,
        "op_types": params.op_types,
        "nodes_to_exclude": params.nodes_to_exclude,
        "pre_process": params.pre_process,
    }
    if params.calibration_method == "percentile":
        config["percentile"] = params.percentile
    quantize_static(
        str(source),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ if params.quant_format == "QDQ" else QuantFormat.QOperator,
        op_types_to_quantize=params.op_types,
        per_channel=per_channel,
        reduce_range=params.reduce_range,
        activation_type=qtype[params.activation_type],
        weight_type=qtype[params.weight_type],
        nodes_to_exclude=params.nodes_to_exclude or None,
        calibrate_method=method,
        extra_options=extra,
    )
    return config


def run(inputs: JobInputs, params: QuantizeParams, progress: Progress) -> tuple[QuantizeReport, list[ArtifactOut]]:
    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    out_dir = Path(inputs.out_dir)
    src = Path(inputs.model_path)
    dst = out_dir / "model.quant.onnx"
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    batch = forced or 16

    reader = None
    if params.mode == "static":
        role = "calibration" if "calibration" in inputs.datasets else "train"
        progress(0.02, f"loading calibration data ({role})")
        feeds, _, _ = _feeds(inputs, role)
        reader = _Reader(feeds, batch, params.calibration_max_samples)
        if reader.samples < 32:
            warnings.append(
                f"only {reader.samples} calibration samples: ranges may not cover real inputs "
                "(100-1000 representative samples are typical)"
            )
    progress(0.1, "calibrating and quantizing" if params.mode == "static" else "converting")
    started = time.perf_counter()
    try:
        config = quantize_model(src, dst, params, reader, out_dir)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError("quantization_failed", f"ONNX Runtime's quantizer failed: {str(exc)[:500]}") from None
    seconds = time.perf_counter() - started
    progress(0.4, "checking the produced model")
    try:
        out_info = check_and_inspect(str(dst))
    except EngineError as exc:
        raise EngineError("quantization_failed", f"the produced model is not valid: {exc.detail}") from None
    errors = None
    if params.mode == "static" and params.quant_format == "QDQ" and params.error_table:
        progress(0.42, "measuring the error of each tensor")
        try:
            errors = layer_errors(src, dst, feeds, batch, out_dir.parent)
        except Exception as exc:  # a diagnostic: its failure must not fail the job
            warnings.append(f"the per-tensor error table could not be computed: {str(exc)[:200]}")
    floats = left_in_float(dst) if params.mode != "fp16" else []
    if floats and params.mode != "fp16":
        warnings.append(
            f"{len(floats)} weighted node(s) left in float (not supported by ORT's quantizer for this "
            f"mode, or excluded): {', '.join(floats[:10])}{' ...' if len(floats) > 10 else ''}"
        )
    if params.mode == "fp16":
        warnings.append(
            "fp16 halves the size but is not faster on CPUs (ORT's CPU kernels mostly compute in "
            "fp32 and add casts); see the measured latency below"
        )

    if "eval" in inputs.datasets:
        eval_feeds, labels, summary = _feeds(inputs, "eval")
        task = summary.label.kind if summary.label else None
        if params.eval_max_samples is not None:
            eval_feeds = {k: v[: params.eval_max_samples] for k, v in eval_feeds.items()}
            labels = labels[: params.eval_max_samples] if labels is not None else None
    else:
        eval_feeds, labels, summary, task = _synthetic_feeds(info, forced or 64), None, None, None
        warnings.append("no eval dataset: fidelity is measured on random inputs and no task metric is reported")
    threads = params.threads or sorted({1, inputs.max_threads})
    threads = [t for t in threads if t <= inputs.max_threads] or [1]
    comparison = compare(
        str(src),
        str(dst),
        outputs=[o.name for o in info.outputs],
        eval_feeds=eval_feeds,
        labels=labels,
        label_summary=summary,
        task=task,
        prediction_output=pick_output(info, params.output),
        batch_sizes=[forced] if forced else params.batch_sizes,
        threads=threads,
        runs=params.runs,
        warmup=params.warmup_runs,
        run_batch=forced or 256,
        progress=lambda f, stage: progress(0.45 + 0.5 * f, stage),
    )
    bad = [f.output for f in comparison.fidelity if f.non_finite_values]
    if bad:
        warnings.append(
            f"the produced model's outputs contain inf/NaN ({', '.join(bad)}): likely fp16 overflow; "
            "block the overflowing ops (op_block_list) or keep float32"
        )
    machine.load_average_1m_after = load_average()
    report = QuantizeReport(
        warnings=warnings,
        machine=machine,
        mode=params.mode,
        config=config,
        comparison=comparison,
        left_in_float=floats,
        quantization_seconds=round(seconds, 3),
        calibration_samples=reader.samples if reader else None,
        output_model={"filename": dst.name, "size_bytes": dst.stat().st_size, "info": out_info.model_dump(mode="json")},
        usable=not bad,
        layer_errors=errors,
    )
    artifacts = [
        ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model=params.mode,
            model_info=out_info.model_dump(mode="json"),
        )
    ]
    return report, artifacts


KIND = JobKind(
    name="quantize",
    params=QuantizeParams,
    report=QuantizeReport,
    run=run,
    validate=validate,
    roles=("eval", "calibration", "train"),
    required=(),
    queue="measure",
    threads=lambda p: max(p.threads) if p.threads else 1,
)
