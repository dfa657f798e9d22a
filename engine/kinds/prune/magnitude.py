"""`magnitude`: unstructured sparsity — the smallest weights of Conv/ConvTranspose/Gemm/MatMul set to zero, to a
target ratio per layer or globally (one threshold across layers). Dense storage neither shrinks nor runs faster:
the report gives the gzip size, which does shrink, and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from engine.core.errors import EngineError, ErrorCode
from engine.kinds.prune.params import PruneParams

PRUNABLE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def prunable_weights(model: onnx.ModelProto, params: PruneParams) -> tuple[dict[str, str], list[dict[str, str]]]:
    """{weight initializer: node name} for weights that may be pruned; and the layers left alone, with why."""
    inits = {t.name: t for t in model.graph.initializer}
    chosen: dict[str, str] = {}
    alone: list[dict[str, str]] = []
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    for node in model.graph.node:
        if node.op_type not in PRUNABLE_OPS:
            continue
        label = node.name or node.output[0]
        slots = [1] if node.op_type != "MatMul" else [0, 1]
        for slot in slots:
            if slot >= len(node.input) or node.input[slot] not in inits:
                continue
            name = node.input[slot]
            t = inits[name]
            why = None
            if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                why = "not a float weight"
            elif name in params.exclude or node.name in params.exclude:
                why = "excluded by params.exclude"
            elif node.op_type in params.exclude_op_types:
                why = f"{node.op_type} excluded by params.exclude_op_types"
            elif users.get(name, 0) > 1:
                why = "the weight is shared by several nodes"
            if why:
                alone.append({"layer": label, "weight": name, "why": why})
            else:
                chosen[name] = label
    return chosen, alone


def magnitude_prune(src: Path, dst: Path, params: PruneParams) -> tuple[dict[str, Any], list[dict], list[dict]]:
    model = onnx.load(str(src))
    params.check_names(model)
    chosen, alone = prunable_weights(model, params)
    unknown = sorted(set(params.ratios or {}) - set(chosen) - {a["weight"] for a in alone})
    if unknown:
        names = sorted({t.name for t in model.graph.initializer})
        raise EngineError(
            ErrorCode.UNKNOWN_LAYER,
            f"params.ratios names weights that are not prunable layers: {unknown[:10]} (weights: {names[:20]})",
        )
    if not chosen:
        raise EngineError(
            ErrorCode.NOTHING_TO_PRUNE, "the model has no prunable layer (float Conv/Gemm/MatMul weights)"
        )
    by_name = {t.name: t for t in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(by_name[name]).copy() for name in chosen}
    targets = {name: (params.ratios or {}).get(name, params.ratio) for name in chosen}
    threshold = None
    if params.scope == "global" and params.ratio is not None:
        pooled = np.concatenate([np.abs(a).ravel() for n, a in arrays.items() if n not in (params.ratios or {})])
        if pooled.size:
            threshold = float(np.quantile(pooled, params.ratio))
    rows = []
    for name, array in arrays.items():
        target = targets[name]
        before = float((array == 0).mean())
        if target is None:
            alone.append({"layer": chosen[name], "weight": name, "why": "no ratio given for it"})
            continue
        flat = np.abs(array).ravel()
        if threshold is not None and name not in (params.ratios or {}):
            mask = np.abs(array) <= threshold
        else:
            k = int(round(target * flat.size))
            mask = np.zeros(flat.size, dtype=bool)
            if k > 0:
                mask[np.argpartition(flat, k - 1)[:k]] = True
            mask = mask.reshape(array.shape)
        array[mask] = 0
        by_name[name].CopyFrom(numpy_helper.from_array(array.astype(array.dtype), name))
        rows.append(
            {
                "layer": chosen[name],
                "weight": name,
                "shape": list(array.shape),
                "target": target if threshold is None or name in (params.ratios or {}) else None,
                "sparsity_before": round(before, 4),
                "sparsity_after": round(float((array == 0).mean()), 4),
            }
        )
    onnx.save(model, str(dst))
    config = {"scope": params.scope, "ratio": params.ratio, "ratios": params.ratios, "global_threshold": threshold}
    return config, rows, alone
