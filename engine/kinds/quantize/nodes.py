"""Which nodes of a model to leave in float: the ones quantization damages most (repairs), the ones whose values
overflow fp16, and names for every node (nodes_to_exclude needs them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from engine.measure.data import feeds_for
from engine.runtime import make_session

PASS_THROUGH = {
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
    "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Gelu",
}  # fmt: skip
FP16_MAX = 65504.0
OVERFLOW_SAMPLES = 32


def name_nodes(src: Path, dst: Path) -> Path:
    """A copy of the model whose nodes all have names (nodes_to_exclude needs them), or src if they do."""
    model = onnx.load(str(src))
    if all(n.name for n in model.graph.node):
        return src
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    onnx.save(model, str(dst))
    return dst


def damaged_nodes(
    model_path: Path, sqnr: dict[str, float], op_types: set[str] | None = None
) -> list[tuple[str, float]]:
    """Quantized compute nodes ranked by how much SQNR falls across them (input SQNR - output SQNR), worst first;
    only nodes of `op_types` when given (those a dynamic trial quantized).

    A pass-through node's output (Relu, pooling, reshapes) is charged to the compute node that feeds it."""
    model = onnx.load(str(model_path))
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    ranked: dict[str, float] = {}
    best = max(sqnr.values(), default=0.0)  # a graph input is not collected: it is as good as the best tensor
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in PASS_THROUGH or not node.output or (op_types and node.op_type not in op_types):
            continue
        inputs = [sqnr.get(i, best) for i in node.input if i in sqnr or i in graph_inputs]
        after = node.output[0]  # follow pass-throughs (fused Conv+Relu has no QDQ between them)
        outs = [sqnr[after]] if after in sqnr else []
        while len(users.get(after, [])) == 1 and users[after][0].op_type in PASS_THROUGH:
            after = users[after][0].output[0]
            outs += [sqnr[after]] if after in sqnr else []
        if not inputs or not outs:
            continue
        out = min(outs)
        ranked[node.name] = min(inputs) - out
    return sorted(ranked.items(), key=lambda kv: -kv[1])


def overflowing_nodes(model_path: Path, feeds: dict[str, np.ndarray], tmp: Path) -> list[str]:
    """Nodes that read or write float32 values beyond fp16's range (65,504) on a few samples: keep them in float32.

    Both ends count: a consumer of an overflowing tensor would get it cast to fp16, which is inf again.
    Unnamed nodes are described by op type and output (they cannot be excluded by name)."""
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    aug = tmp / "overflow.aug.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(aug))
    try:
        session = make_session(str(aug), 1)
        sample = {k: v[:OVERFLOW_SAMPLES] for k, v in feeds.items()}
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, feeds_for(session, sample))
    finally:
        aug.unlink(missing_ok=True)
    big = {k: v for k, v in sample.items() if v.dtype.kind == "f" and np.abs(v).max(initial=0) > FP16_MAX}
    for name, value in zip(names, values, strict=True):
        if value.dtype.kind == "f" and value.size and float(np.nanmax(np.abs(value))) > FP16_MAX:
            big[name.removesuffix("_ReshapeOutput")] = value
    model = onnx.load(str(model_path))
    return [
        n.name or f"(unnamed {n.op_type} -> {n.output[0]})"
        for n in model.graph.node
        if any(t in big for t in [*n.input, *n.output])
    ]
