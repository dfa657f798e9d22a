"""`structured`: whole neurons and conv channels removed with their dependents (engine.pruning.structured), by
weight norm or by mean absolute activation on the eval data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine.core.errors import EngineError, ErrorCode
from engine.kinds.prune.params import PruneParams
from engine.measure.data import feeds_for
from engine.pruning.structured import Graph, producers, prune_structured
from engine.runtime import make_session

ACTIVATION_SAMPLES = 256


def activation_scores(src: Path, feeds: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    """Mean |activation| per unit of every candidate layer's output on up to ACTIVATION_SAMPLES samples."""
    model = onnx.load(str(src))
    g = Graph(model)
    names = {node.output[0]: (1 if node.op_type == "Conv" else -1) for node, *_ in producers(g)}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    path = tmp / "activations.onnx"
    onnx.save(model, str(path))
    try:
        session = make_session(str(path), 1)
        sample = {k: v[:ACTIVATION_SAMPLES] for k, v in feeds.items()}
        wanted = list(names)
        values = session.run(wanted, feeds_for(session, sample))
    finally:
        path.unlink(missing_ok=True)
    scores = {}
    for name, value in zip(wanted, values, strict=True):
        a = np.abs(np.moveaxis(value.astype(np.float64), names[name], 0))
        scores[name] = a.reshape(a.shape[0], -1).mean(axis=1)
    return scores


def structured_prune(
    src: Path, dst: Path, params: PruneParams, feeds: dict[str, np.ndarray] | None, tmp: Path
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    model = onnx.load(str(src))
    params.check_names(model)
    scores = activation_scores(src, feeds, tmp) if params.criterion == "activation" and feeds is not None else None
    known = {t.name for t in model.graph.initializer}
    unknown = sorted(set(params.ratios or {}) - known)
    if unknown:
        raise EngineError(
            ErrorCode.UNKNOWN_LAYER, f"params.ratios names weights the model does not have: {unknown[:10]}"
        )
    rows, alone = prune_structured(
        model,
        params.ratio,
        params.ratios,
        params.criterion,
        set(params.exclude),
        set(params.exclude_op_types),
        scores,
        coupled=params.coupled,
    )
    if not rows:
        reasons = "; ".join(f"{a['layer']}: {a['why']}" for a in alone[:10]) or "no Conv/Gemm/MatMul with weights"
        raise EngineError(ErrorCode.NOTHING_TO_PRUNE, f"no layer could be pruned structurally ({reasons})")
    onnx.save(model, str(dst))
    config = {"ratio": params.ratio, "ratios": params.ratios, "criterion": params.criterion}
    return config, rows, alone
