"""The quantizers themselves: ONNX Runtime's dynamic and static quantization and the fp16 converter, with the
graph clean-ups they need (fp16 Cast round trips removed, nodes re-sorted, pre-processing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from engine.bundle import has_external_data
from engine.core.errors import EngineError, ErrorCode
from engine.inspect import ModelInfo
from engine.kinds.quantize.calibration import CALIB_MERGE_EVERY, Reader
from engine.kinds.quantize.candidates import embedding_tables
from engine.kinds.quantize.params import QuantizeParams
from engine.kinds.quantize.streamed import weight_only_streamed

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


def is_quantized(info: ModelInfo) -> bool:
    return any(op.split(":")[-1] in QUANTIZED_OPS for op in info.op_histogram)


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


def left_in_float(path: Path) -> list[str]:
    """Weighted nodes whose weight is still a float initializer (not fed through DequantizeLinear)."""
    model = onnx.load(str(path), load_external_data=False)  # names and types only
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


def pre_process(src: Path, dst: Path) -> Path:
    """ORT's quant_pre_process: shape inference and graph optimization (Conv+BatchNorm folding and the like)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def fuse_transformer(src: Path, dst: Path) -> dict[str, int]:
    """ORT's transformer graph fusion (onnxruntime.transformers.optimizer, its Python fusions only, BERT rules):
    Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization and the like, which dynamic quantization
    then quantizes as QAttention. Returns {fused op: count} (empty: nothing matched); dst is written either way."""
    import onnxruntime.quantization  # noqa: F401 - before onnxruntime.transformers (it edits sys.path)
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    stats = {op: int(n) for op, n in (fused.get_fused_operator_statistics() or {}).items() if n}
    fused.save_model_to_file(str(dst))
    return stats


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _fp16(src: Path, dst: Path, params: QuantizeParams) -> dict[str, Any]:
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


def _dynamic(src: Path, dst: Path, params: QuantizeParams) -> dict[str, Any]:
    from onnxruntime.quantization import quantize_dynamic

    op_types = params.op_types or ["MatMul", "Gemm"]
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=op_types,
        per_channel=bool(params.per_channel),
        reduce_range=params.reduce_range,
        weight_type=_qtype(params.weight_type),
        # ORT turns each Gemm into MatMul '<name>_MatMul' + Add before quantizing: exclude it by that name too
        nodes_to_exclude=[*params.nodes_to_exclude, *(f"{n}_MatMul" for n in params.nodes_to_exclude)] or None,
        # fused graphs (com.microsoft ops) leave some tensor types to shape inference that cannot infer them
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    return {
        "weight_type": params.weight_type,
        "per_channel": bool(params.per_channel),
        "reduce_range": params.reduce_range,
        "op_types": op_types,
        "nodes_to_exclude": params.nodes_to_exclude,
    }


def fold_weight_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Transposes of initializers become initializers (exporters write a tied lm_head as Transpose(embedding) ->
    MatMul: the MatMul's weight must be a constant to be quantized). Unused initializers are dropped later."""
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Transpose" and node.input[0] in inits and node.output[0] not in outputs:
            array = numpy_helper.to_array(inits[node.input[0]])
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            model.graph.initializer.append(
                numpy_helper.from_array(np.ascontiguousarray(array.transpose(perm)), node.output[0])
            )
            continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def _weight_only(src: Path, dst: Path, params: QuantizeParams) -> dict[str, Any]:
    """4-bit blockwise MatMul weights (ORT's MatMulNBits): RTN is ORT's default quantizer, HQQ its half-quadratic
    one. Gemms are first rewritten as MatMul + Add (ORT's own rewrite, as its dynamic quantizer does; exporters write
    linear layers as either); only MatMuls whose weight is a 2-D initializer are quantized, the rest stays float.
    Embedding tables (RTN): GatherBlockQuantized needs opset 21, to which ORT lifts the model; when the lifted model
    fails the checker (an op whose signature changed since the model's opset), it is redone without them."""
    if has_external_data(src):  # too big to load whole: one tensor at a time (engine.kinds.quantize.streamed)
        return weight_only_streamed(
            src,
            dst,
            block_size=params.block_size,
            symmetric=params.weight_only_symmetric,
            accuracy_level=params.accuracy_level or None,
            exclude=set(params.nodes_to_exclude),
            max_tensor_bytes=params.weight_only_max_tensor_bytes,
        )
    # ORT's HQQ has no Gather; without an embedding table, asking for Gather would only lift the opset
    gather = params.weight_only_gather and params.weight_only_algorithm == "rtn" and embedding_tables(src) > 0
    model = _nbits(src, params, gather=gather)
    note = None
    if gather:
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            first = str(exc).splitlines()[0][:200]
            note = f"embedding tables left in float: lifted to opset 21 the model is invalid ({first})"
            model, gather = _nbits(src, params, gather=False), False
    if not any(n.op_type == "MatMulNBits" for n in model.graph.node):
        why = "weight_only: no MatMul or Gemm with a constant 2-D weight to quantize (MatMulNBits takes no Conv)"
        raise EngineError(ErrorCode.NOTHING_TO_QUANTIZE, why)
    onnx.save(model, str(dst))
    used = {
        "bits": 4,
        "algorithm": params.weight_only_algorithm,
        "block_size": params.block_size,
        "symmetric": params.weight_only_symmetric if params.weight_only_algorithm == "rtn" else False,
        "accuracy_level": params.accuracy_level,
        "embedding_tables": gather,
        "nodes_to_exclude": params.nodes_to_exclude,
    }
    return {**used, "embedding_tables_note": note} if note else used


def _nbits(src: Path, params: QuantizeParams, *, gather: bool) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )
    from onnxruntime.quantization.onnx_model import ONNXModel

    config: Any
    if params.weight_only_algorithm == "hqq":
        config = HQQWeightOnlyQuantConfig(block_size=params.block_size, bits=4)
    else:
        config = DefaultWeightOnlyQuantConfig(
            block_size=params.block_size,
            is_symmetric=params.weight_only_symmetric,
            accuracy_level=params.accuracy_level or None,
            bits=4,
            op_types_to_quantize=("MatMul", "Gather") if gather else ("MatMul",),
        )
    source = ONNXModel(fold_weight_transposes(onnx.load(str(src))))
    source.replace_gemm_with_matmul()
    excluded = [*params.nodes_to_exclude, *(f"{n}_MatMul" for n in params.nodes_to_exclude)]  # a Gemm's new name
    quantizer = MatMulNBitsQuantizer(
        source.model,
        bits=4,
        block_size=params.block_size,
        is_symmetric=params.weight_only_symmetric,
        accuracy_level=params.accuracy_level or None,
        nodes_to_exclude=excluded or None,
        algo_config=config,
    )
    quantizer.process()
    model: onnx.ModelProto = quantizer.model.model
    if params.weight_only_algorithm == "hqq" and params.accuracy_level:
        for node in model.graph.node:  # HQQ's config has no accuracy level: set it on the nodes it made
            if node.op_type == "MatMulNBits":
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", params.accuracy_level))
    return model


def quantize_model(src: Path, dst: Path, params: QuantizeParams, reader: Reader | None, tmp: Path) -> dict[str, Any]:
    """Run ORT's quantizer (or the fp16 converter); returns the configuration used."""
    import onnxruntime.quantization  # noqa: F401 - before onnxruntime.transformers (it edits sys.path)

    if params.mode == "fp16":
        return _fp16(src, dst, params)
    if params.mode == "weight_only":
        return _weight_only(src, dst, params)
    if params.mode == "dynamic":
        return _dynamic(src, dst, params)
    return _static(src, dst, params, reader, tmp)


def _static(src: Path, dst: Path, params: QuantizeParams, reader: Reader | None, tmp: Path) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    assert reader is not None
    reader.rewind()  # the same reader serves every static trial of an auto search
    source, skipped = src, None
    if params.pre_process is not False:
        try:
            source = pre_process(src, tmp / "preprocessed.onnx")
        except Exception as exc:
            if params.pre_process:
                raise EngineError(
                    ErrorCode.QUANTIZATION_FAILED, f"quant_pre_process failed: {str(exc)[:400]}"
                ) from None
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
    config: dict[str, Any] = {
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
        activation_type=_qtype(params.activation_type),
        weight_type=_qtype(params.weight_type),
        nodes_to_exclude=params.nodes_to_exclude or None,
        calibrate_method=method,
        extra_options=extra,
    )
    return config
