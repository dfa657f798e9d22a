"""The `quantize` job: ONNX Runtime dynamic or static quantization, or fp16 conversion, measured against the
original on this machine (engine/compare.py) before it is handed back.

Defaults follow what was measured (../shared/ONNX-NOTES.md): static uses unsigned int8 activations (U8S8,
several times faster than ORT's signed default on CNNs with VNNI), dynamic quantizes only MatMul/Gemm
(dynamically quantized convolutions run slower than fp32). Mode `auto`, an accuracy-aware search, is
described in engine/quantize_auto.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto
from pydantic import Field, field_validator

from engine import binding
from engine.compare import Comparison, compare_with_params, eval_data
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.evaluate import pick_output
from engine.inspect import ModelInfo, check_and_inspect
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.quantize_auto import AutoSearch, Search, name_nodes, overflowing_nodes
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
    mode: Literal["dynamic", "static", "fp16", "auto"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; static: int8 weights and "
        "activations calibrated on data (calibration dataset, else train); fp16: half-precision floats; "
        "auto: try the candidates that fit the model, measure each on eval and hand back the one that meets "
        "the goal (max_accuracy_drop, or min_output_cosine without labels) with the best objective"
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool | None = Field(default=None, description="Per-channel weight scales (default: static yes)")
    reduce_range: bool = Field(default=False, description="7-bit weights (for CPUs without VNNI; costs accuracy)")
    op_types: list[str] | None = Field(
        default=None, description="Op types to quantize (default: dynamic MatMul and Gemm; static all ORT supports)"
    )
    nodes_to_exclude: list[str] = Field(
        default_factory=list, description="Node names to leave in float (fp16: kept in float32)"
    )
    quant_format: Literal["QDQ", "QOperator"] = Field(default="QDQ", description="static: graph format")
    activation_type: Literal["uint8", "int8"] = Field(default="uint8", description="static: activation type")
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="static: how activation ranges are chosen from the calibration data"
    )
    percentile: float = Field(default=99.999, gt=90, le=100, description="percentile calibration")
    calibration_max_samples: int = Field(default=256, ge=1, le=100000)
    pre_process: bool | None = Field(
        default=None,
        description="static: run ORT's quant_pre_process first (graph optimization: BatchNorm folded into Conv, "
        "measured 1.5x faster int8 on a ResNet); default: yes, and without it if it fails (with a warning)",
    )
    keep_io_types: bool = Field(default=True, description="fp16: keep float32 inputs and outputs")
    op_block_list: list[str] = Field(default_factory=list, description="fp16: op types to keep in float32")
    output: str | None = Field(default=None, description="The prediction output (default: first float output)")
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[int] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000, description="Timed runs of each model per configuration")
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1, description="Eval samples used for metrics")
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="auto: the most the primary metric (accuracy, r2) may drop on eval"
    )
    drop_mode: Literal["relative", "absolute"] = Field(
        default="relative", description="auto: max_accuracy_drop as a fraction of the original's value, or in points"
    )
    min_output_cosine: float = Field(
        default=0.99,
        ge=-1,
        le=1,
        description="auto: the goal when eval has no labels (cosine similarity of the prediction output to the "
        "original's); when set explicitly it is required in addition to the accuracy goal",
    )
    objective: Literal["latency", "size"] = Field(
        default="latency", description="auto: what the chosen model minimizes (latency at batch 1, 1 thread)"
    )
    auto_modes: list[Literal["static", "dynamic", "fp16"]] = Field(
        default=["static", "dynamic", "fp16"], min_length=1, description="auto: the modes the search may try"
    )
    max_trials: int = Field(default=10, ge=1, le=100, description="auto: most configurations tried")
    max_seconds: float = Field(
        default=900, gt=0, description="auto: time budget of the search (the job's time limit still applies)"
    )
    trial_runs: int = Field(default=30, ge=5, le=1000, description="auto: timed runs per trial (batch 1, 1 thread)")
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
    mode: str = Field(description="The mode of the model handed back (for auto: of the chosen trial)")
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


def _is_quantized(info: ModelInfo) -> bool:
    return any(op.split(":")[-1] in QUANTIZED_OPS for op in info.op_histogram)


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: QuantizeParams) -> None:
    if _is_quantized(info):
        found = sorted(op for op in info.op_histogram if op.split(":")[-1] in QUANTIZED_OPS)
        raise EngineError("already_quantized", f"the model is already quantized (it has {', '.join(found)})")
    if info.initializer_bytes == 0 or info.parameter_count == 0:
        raise EngineError("nothing_to_quantize", "the model has no weights to quantize")
    if params.mode == "auto" and "eval" not in summaries:
        raise EngineError(
            "missing_dataset", "auto quantization measures its goal on an eval (or test, or validation) dataset"
        )
    if params.mode in ("static", "auto") and ("calibration" in summaries or "train" in summaries):
        binding.plan(info.inputs, summaries["calibration" if "calibration" in summaries else "train"])
    if params.mode == "static":
        source = "calibration" if "calibration" in summaries else "train" if "train" in summaries else None
        if source is None:
            raise EngineError("missing_dataset", "static quantization needs a calibration (or train) dataset")
        binding.plan(info.inputs, summaries[source])
    if "eval" in summaries:
        binding.plan(info.inputs, summaries["eval"])
    pick_output(info, params.output)


def drop_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Remove Cast(float32 -> float16) -> Cast(-> float32) pairs, which the fp16 converter puts between two nodes
    kept in float32 (blocked or around float32 I/O): they only lose precision, and overflow above 65,504."""
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    dropped = []
    for first in graph.node:
        if cast_to(first) != TensorProto.FLOAT16 or types.get(first.input[0]) != TensorProto.FLOAT:
            continue
        users = consumers.get(first.output[0], [])
        if first.output[0] in outputs or not users or any(cast_to(u) != TensorProto.FLOAT for u in users):
            continue
        for second in users:  # now a float32 -> float32 Cast: a no-op that keeps the names as they were
            second.input[0] = first.input[0]
        dropped.append(first)
    keep = [n for n in graph.node if all(n is not d for d in dropped)]
    del graph.node[:]
    graph.node.extend(keep)
    return len(dropped)


CALIB_MERGE_EVERY = 8  # ORT merges collected calibration ranges every this many batches (bounded memory)


class _Reader:
    """Calibration batches, bounded: only `max_samples` samples, `batch` at a time.

    `equal`: every batch the same size (ORT's histogram calibrators, entropy and percentile, stack the batches
    and fail on a short last one), dropping the remainder."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int, max_samples: int, equal: bool = False) -> None:
        n = min(next(iter(feeds.values())).shape[0], max_samples)
        if equal and n > batch:
            n -= n % batch
        self.batches = [{k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]
        if len(self.batches) % CALIB_MERGE_EVERY == 0:
            # ORT merges and clears collected ranges every CALIB_MERGE_EVERY batches and then fails with "No data
            # is collected" when nothing is left after the last merge: one batch more (equal: one fewer).
            last = self.batches.pop()
            size = next(iter(last.values())).shape[0]
            if not equal and size > 1:
                self.batches += [
                    {k: v[: size // 2] for k, v in last.items()},
                    {k: v[size // 2 :] for k, v in last.items()},
                ]
            elif not equal or not self.batches:
                self.batches.append(last)
            else:
                n -= size
        self.samples = n
        self.feeds, self.batch = feeds, batch
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates the reader
        return iter(self.batches)


def _feeds(inputs: JobInputs, role: str) -> tuple[dict[str, np.ndarray], np.ndarray | None, DatasetSummary]:
    return (*inputs.feeds(role), inputs.datasets[role].summary)


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


ERROR_TABLE_SAMPLES = 8  # collecting every intermediate tensor is memory-hungry: a few samples only
ERROR_TABLE_ROWS = 20


def _activation_errors(float_path: Path, qdq_path: Path, reader: _Reader, tmp: Path) -> dict[str, dict[str, float]]:
    """ORT's qdq_loss_debug: for every float tensor, SQNR of the QDQ model against the float model."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_f, aug_q = tmp / "float.aug.onnx", tmp / "qdq.aug.onnx"
    try:
        modify_model_output_intermediate_tensors(str(float_path), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
        acts_f = collect_activations(str(aug_f), reader)
        acts_q = collect_activations(str(aug_q), reader)
    finally:
        for path in (aug_f, aug_q):
            path.unlink(missing_ok=True)
    return compute_activation_error(create_activation_matching(acts_q, acts_f))


def activation_sqnr(float_path: Path, qdq_path: Path, reader: _Reader, tmp: Path) -> dict[str, float]:
    """{tensor: SQNR dB vs float} on the first ERROR_TABLE_SAMPLES calibration samples (quantize_auto's input)."""
    few = _Reader({k: v[:ERROR_TABLE_SAMPLES] for k, v in reader.feeds.items()}, reader.batch, ERROR_TABLE_SAMPLES)
    errors = _activation_errors(float_path, qdq_path, few, tmp)
    return {name: e["xmodel_err"] for name, e in errors.items() if "xmodel_err" in e}


def layer_errors(float_path: Path, qdq_path: Path, feeds: dict[str, np.ndarray], batch: int, tmp: Path) -> dict:
    """Per-tensor SQNR of the QDQ model against the float model (ORT's qdq_loss_debug), worst first."""
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    errors = _activation_errors(float_path, qdq_path, _Reader(feeds, batch, ERROR_TABLE_SAMPLES), tmp)
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
    return {
        "samples": min(ERROR_TABLE_SAMPLES, next(iter(feeds.values())).shape[0]),
        "activations": activations[:ERROR_TABLE_ROWS],
        "weights": weights[:ERROR_TABLE_ROWS],
    }


def pre_process(src: Path, dst: Path) -> Path:
    """ORT's quant_pre_process: shape inference and graph optimization (Conv+BatchNorm folding and the like)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


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
            onnx.load(str(src)),
            keep_io_types=params.keep_io_types,
            op_block_list=params.op_block_list or None,
            node_block_list=params.nodes_to_exclude or None,
        )
        drop_fp16_round_trips(model)
        toposort(model.graph)  # the converter appends its input Casts at the end of the node list
        onnx.save(model, str(dst))
        return {
            "keep_io_types": params.keep_io_types,
            "op_block_list": params.op_block_list,
            "nodes_to_exclude": params.nodes_to_exclude,
        }
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
    reader.rewind()  # the same reader serves every static trial of an auto search
    source, skipped = src, None
    if params.pre_process is not False:
        try:
            source = pre_process(src, tmp / "preprocessed.onnx")
        except Exception as exc:
            if params.pre_process:
                raise EngineError("quantization_failed", f"quant_pre_process failed: {str(exc)[:400]}") from None
            skipped = f"quant_pre_process failed, quantized without it: {str(exc)[:300]}"
    per_channel = True if params.per_channel is None else params.per_channel
    extra: dict[str, Any] = {
        "ActivationSymmetric": params.activation_symmetric,
        "WeightSymmetric": params.weight_symmetric,
        "CalibMaxIntermediateOutputs": CALIB_MERGE_EVERY,  # bounded memory: ranges merged every few batches
    }
    method = CalibrationMethod.MinMax
    if params.calibration_method == "entropy":
        method = CalibrationMethod.Entropy
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
        "pre_process": source != src,
    }
    if skipped:
        config["pre_process_skipped"] = skipped
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


def _auto(
    inputs: JobInputs,
    params: QuantizeParams,
    reader: _Reader | None,
    evaluation: tuple[dict[str, np.ndarray], np.ndarray | None, DatasetSummary | None, str | None],
    dst: Path,
    batch: int,
    warnings: list[str],
    progress: Progress,
) -> tuple[AutoSearch, Any]:
    """Run the auto search; the chosen model ends up at dst. Returns the report block and the chosen trial."""
    work = Path(inputs.out_dir).parent / "auto"
    work.mkdir(exist_ok=True)
    eval_feeds, labels, summary, task = evaluation
    if reader is None:
        warnings.append("no calibration or train dataset: static quantization was not tried")
    search = Search(
        src=name_nodes(Path(inputs.model_path), work / "named.onnx"),
        info=inputs.model_info,
        params=params,
        reader=reader,
        eval_feeds=eval_feeds,
        labels=labels,
        summary=summary,
        task=task,
        prediction_output=pick_output(inputs.model_info, params.output),
        batch=batch,
        work=work,
        quantize=quantize_model,
        activation_sqnr=activation_sqnr,
        pre_process=pre_process,
        progress=lambda f, stage: progress(0.05 + 0.55 * f, stage),
    )
    block, path, chosen = search.run()
    if chosen is None or path is None:
        failures = "; ".join(f"{t.name}: {t.error}" for t in block.trials)
        raise EngineError("quantization_failed", f"no auto trial produced a usable model: {failures[:800]}")
    shutil.move(str(path), str(dst))
    if not block.goal_met:
        warnings.append(
            f"goal not met: no configuration reached '{block.goal}' within the budget ({block.stopped_because}); "
            f"the closest, trial {chosen.index} ({chosen.name}), is handed back: {block.goal_metric} "
            f"{chosen.metric if chosen.metric is None else round(chosen.metric, 4)} against "
            f"{block.original_metric if block.original_metric is None else round(block.original_metric, 4)}"
        )
    if params.objective == "latency" and chosen.speedup is not None and chosen.speedup < 1:
        warnings.append(
            f"the chosen model is slower than the original at batch 1, 1 thread ({chosen.speedup:.2f}x): "
            "on this machine no measured configuration that meets the goal is faster"
        )
    failed = [t for t in block.trials if t.status == "failed"]
    if failed:
        warnings.append(f"{len(failed)} trial(s) failed and were skipped: " + "; ".join(t.name for t in failed))
    return block, chosen


def run(inputs: JobInputs, params: QuantizeParams, progress: Progress) -> tuple[QuantizeReport, list[ArtifactOut]]:
    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    out_dir = Path(inputs.out_dir)
    src = Path(inputs.model_path)
    dst = out_dir / "model.quant.onnx"
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    batch = forced or 16

    reader, feeds = None, None
    role = "calibration" if "calibration" in inputs.datasets else "train" if "train" in inputs.datasets else None
    if role is not None and params.mode in ("static", "auto"):
        progress(0.02, f"loading calibration data ({role})")
        feeds, _, _ = _feeds(inputs, role)
        reader = _Reader(feeds, batch, params.calibration_max_samples, params.calibration_method != "minmax")
        if reader.samples < 32:
            warnings.append(
                f"only {reader.samples} calibration samples: ranges may not cover real inputs "
                "(100-1000 representative samples are typical)"
            )
    eval_feeds, labels, summary, task = eval_data(inputs, params.eval_max_samples, forced or 64, warnings)

    auto, mode = None, params.mode
    if params.mode == "auto":
        auto, chosen = _auto(
            inputs, params, reader, (eval_feeds, labels, summary, task), dst, batch, warnings, progress
        )
        mode, config, seconds = chosen.mode, chosen.config, chosen.quantization_seconds or 0.0
    else:
        progress(0.1, "calibrating and quantizing" if params.mode == "static" else "converting")
        started = time.perf_counter()
        try:
            config = quantize_model(src, dst, params, reader, out_dir)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("quantization_failed", f"ONNX Runtime's quantizer failed: {str(exc)[:500]}") from None
        seconds = time.perf_counter() - started
    progress(0.6, "checking the produced model")
    try:
        out_info = check_and_inspect(str(dst))
    except EngineError as exc:
        raise EngineError("quantization_failed", f"the produced model is not valid: {exc.detail}") from None
    errors = None
    if mode == "static" and config.get("quant_format") == "QDQ" and params.error_table and feeds is not None:
        progress(0.62, "measuring the error of each tensor")
        try:
            errors = layer_errors(src, dst, feeds, batch, out_dir.parent)
        except Exception as exc:  # a diagnostic: its failure must not fail the job
            warnings.append(f"the per-tensor error table could not be computed: {str(exc)[:200]}")
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

    comparison = compare_with_params(
        src, dst, inputs, (eval_feeds, labels, summary, task), params, lambda f, stage: progress(0.65 + 0.33 * f, stage)
    )
    bad = [f.output for f in comparison.fidelity if f.non_finite_values]
    if bad:
        hint = "block the overflowing ops (op_block_list) or nodes (nodes_to_exclude), or keep float32"
        if mode == "fp16":
            try:
                nodes = overflowing_nodes(src, eval_feeds, out_dir.parent)
                if nodes:
                    hint = f"these nodes compute values beyond fp16's range, exclude them: {', '.join(nodes[:20])}"
            except Exception as exc:  # a hint only
                hint += f" (finding the overflowing nodes failed: {str(exc)[:200]})"
        warnings.append(
            f"the produced model's outputs contain inf/NaN ({', '.join(bad)}): likely fp16 overflow; {hint}"
        )
    machine.load_average_1m_after = load_average()
    report = QuantizeReport(
        warnings=warnings,
        machine=machine,
        mode=mode,
        requested_mode=params.mode,
        config=config,
        comparison=comparison,
        left_in_float=floats,
        quantization_seconds=round(seconds, 3),
        calibration_samples=reader.samples if reader and mode == "static" else None,
        output_model={"filename": dst.name, "size_bytes": dst.stat().st_size, "info": out_info.model_dump(mode="json")},
        usable=not bad,
        layer_errors=errors,
        auto=auto,
    )
    artifacts = [
        ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model=mode if params.mode != "auto" else f"auto-{mode}",
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
