"""The configurations quantize auto tries on a model, best bets first, and the ones it skips with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine.inspect import ModelInfo

EMBEDDING_MIN_ELEMENTS = 4096


def _ops(info: ModelInfo) -> dict[str, int]:
    ops: dict[str, int] = {}
    for op, n in info.op_histogram.items():
        ops[op.split(":")[-1]] = ops.get(op.split(":")[-1], 0) + n
    return ops


def candidates(
    info: ModelInfo,
    has_calibration: bool,
    modes: list[str],
    objective: str = "size",
    fp16_fast: bool = False,
    embeddings: bool = False,
    has_torch: bool = False,
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(name, quantize params) to try first, best bets first, and the ones skipped with the reason. fp16 is a
    latency candidate only where the CPU computes in fp16 (`fp16_fast`): elsewhere ORT adds casts around fp32
    kernels and it is never faster."""
    todo, skipped = _candidates(info, has_calibration, embeddings, has_torch)
    excluded: dict[str, str] = {m: f"{m} is not in auto_modes" for m in ("static", "dynamic", "fp16", "weight_only")}
    for mode in modes:
        excluded.pop(mode, None)
    if objective == "latency" and not fp16_fast:
        excluded.setdefault(
            "fp16",
            "this CPU has no native fp16 arithmetic (AVX512-FP16, AMX-FP16, Arm FP16), so fp16 cannot be faster "
            "than fp32; it is a candidate for objective size",
        )
    if objective == "latency":
        excluded.setdefault(
            "weight_only",
            "weight-only 4-bit is a size candidate (MatMulNBits dequantizes its blocks as it computes: on CPU a "
            "size win, rarely a speed win); it is tried for objective size",
        )
    skipped += [f"{n}: {excluded[c['mode']]}" for n, c in todo if c["mode"] in excluded]
    return [(n, c) for n, c in todo if c["mode"] not in excluded], skipped


def _candidates(
    info: ModelInfo, has_calibration: bool, embeddings: bool, has_torch: bool
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    ops = _ops(info)
    convs = ops.get("Conv", 0) + ops.get("ConvTranspose", 0)
    matmuls = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    static = [  # pre-processed (BatchNorm folded etc.): 3.0x instead of 2.1x on the ResNet-like benchmark
        (
            "static U8S8 per-channel",
            {"mode": "static", "activation_type": "uint8", "per_channel": True, "pre_process": True},
        ),
        (
            "static S8S8 per-channel",
            {"mode": "static", "activation_type": "int8", "per_channel": True, "pre_process": True},
        ),
        (
            "static U8S8 per-tensor",
            {"mode": "static", "activation_type": "uint8", "per_channel": False, "pre_process": True},
        ),
        (
            "static U8S8 per-channel, not pre-processed",
            {"mode": "static", "activation_type": "uint8", "per_channel": True, "pre_process": False},
        ),
    ]
    dynamic = [
        ("dynamic int8 MatMul/Gemm", {"mode": "dynamic", "per_channel": False}),
        ("dynamic int8 MatMul/Gemm per-channel", {"mode": "dynamic", "per_channel": True}),
    ]
    transformer = []  # MatMul-heavy graphs: embedding tables in int8 (size), ORT's transformer fusion first (speed)
    if embeddings:
        transformer.append(
            (
                "dynamic int8 MatMul/Gemm per-channel + embeddings (Gather)",
                {"mode": "dynamic", "per_channel": True, "op_types": ["MatMul", "Gemm", "Gather"]},
            )
        )
    if ops.get("Softmax", 0) or ops.get("LayerNormalization", 0):
        transformer.append(
            (
                "transformer fusion + dynamic int8 per-channel",
                {"mode": "dynamic", "per_channel": True, "op_types": ["MatMul", "Gemm", "Attention"], "fuse": True},
            )
        )
    fp16 = [("fp16", {"mode": "fp16"})]
    skipped = []
    nbits = [
        ("weight-only int4 RTN, block 32", {"mode": "weight_only", "weight_only_algorithm": "rtn", "block_size": 32}),
        ("weight-only int4 HQQ, block 64", {"mode": "weight_only", "weight_only_algorithm": "hqq", "block_size": 64}),
    ]
    if not has_torch:
        skipped.append(f"{nbits[1][0]}: ORT's HQQ quantizer needs PyTorch (the train extra)")
        nbits = nbits[:1]
    if not matmuls:
        skipped += [
            f"{name}: the model has no MatMul or Gemm (MatMulNBits quantizes their weights)" for name, _ in nbits
        ]
        nbits = []
    if not has_calibration:
        skipped += [f"{name}: no calibration or train dataset" for name, _ in static]
        static = []
    if not matmuls:
        skipped += [f"{name}: the model has no MatMul or Gemm" for name, _ in dynamic]
        dynamic = transformer = []
    elif convs:  # dynamic convolutions are slower than fp32 (ConvInteger); dynamic still helps a conv net's head
        skipped.append(f"{dynamic[1][0]}: the model is convolutional, one dynamic candidate is enough")
        dynamic = dynamic[:1]
    if convs or not matmuls:
        return static[:2] + dynamic + fp16 + static[2:] + nbits, skipped
    # MatMul-heavy (transformer-like): per-channel first (it kept a sentence encoder's pooled cosine at 0.993 where
    # per-tensor lost it), the transformer variants, then static and fp16
    return dynamic[::-1] + transformer + nbits + static[:1] + fp16 + static[1:], skipped


def embedding_tables(model_path: Path) -> int:
    """Bytes of the float tables that Gather nodes read from initializers (embeddings), large ones only."""
    model = onnx.load(str(model_path), load_external_data=False)
    tables = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    found = 0
    for node in model.graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        if table is not None and int(np.prod(table.dims)) >= EMBEDDING_MIN_ELEMENTS:
            found += 4 * int(np.prod(table.dims))
    return found
