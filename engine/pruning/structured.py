"""Structured pruning on an ONNX graph: remove whole output units of Conv (channels) and Gemm/MatMul (neurons),
with everything that depends on them, and leave a layer alone — saying why — when that cannot be done safely.

For each prunable layer (a Conv with group 1, a Gemm, or a MatMul whose second input is a 2-D initializer) the
output tensor is followed forward:
- through element-wise activations, pooling, Dropout/Identity and BatchNormalization (its four parameters are
  sliced with the channels), and through depthwise convolutions (sliced too, `group` updated);
- through Flatten, or a Reshape to [N, features], after a Conv: each channel is a block of H*W features (shape
  inference gives H*W; an explicit feature count in the Reshape's shape constant is updated);
- through Concat along the channel axis: the kept channels move to their offset in the concatenation;
- into consumers that absorb the change: a Conv (group 1; its input channels), a Gemm or a MatMul (input rows).
Anything else stops the layer: an element-wise Add or Mul (residual connections couple channels across
layers), a graph output (outputs keep their shape), a weight shared by several nodes, unknown shapes, other ops.
Such layers are left alone with the reason; coupled groups are not pruned jointly yet.

Importance of a unit: the L1 or L2 norm of its weights (output row of the producer), or, data-driven, the mean
absolute activation of its output on sample inputs. The lowest-importance units go; at least one always stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

ELEMENTWISE = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus",
    "Gelu", "Erf", "Dropout", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
}  # fmt: skip


class Refused(Exception):
    """This layer cannot be pruned safely; the message says why."""


@dataclass
class Plan:
    """Edits for one layer, in the original graph's index space: initializer slices (name, axis, kept indices),
    depthwise `group` attributes to follow a weight's channel count, Reshape constants (name, kept features)."""

    slices: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    groups: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)
    constants: list[tuple[str, np.ndarray]] = field(default_factory=list)


class Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}
        self.captured = captured_names(model.graph)  # read inside If/Loop/Scan bodies: those are left untouched
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        except Exception:
            infos = []
        self.shapes: dict[str, list[int | None]] = {}
        for v in infos:
            dims = v.type.tensor_type.shape.dim
            self.shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def attr(self, node: onnx.NodeProto, name: str, default: Any) -> Any:
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, []))


def captured_names(graph: onnx.GraphProto) -> set[str]:
    """Names that nodes inside subgraphs (If/Loop/Scan bodies, at any depth) read."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                for inner in body.node:
                    names.update(i for i in inner.input if i)
                names |= captured_names(body)
    return names


def producers(g: Graph) -> list[tuple[onnx.NodeProto, str, int, int]]:
    """(node, weight name, output-unit axis of the weight, unit count) for every candidate layer."""
    out = []
    for node in g.model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in g.inits:
            w = g.inits[node.input[1]]
            if g.attr(node, "group", 1) == 1 and len(w.dims) >= 3:
                out.append((node, node.input[1], 0, int(w.dims[0])))
        elif node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in g.inits:
            w = g.inits[node.input[1]]
            axis = 0 if g.attr(node, "transB", 0) else 1
            out.append((node, node.input[1], axis, int(w.dims[axis])))
        elif node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in g.inits:
            w = g.inits[node.input[1]]
            if len(w.dims) == 2:
                out.append((node, node.input[1], 1, int(w.dims[1])))
    return out


def importance(g: Graph, weight: str, axis: int, criterion: str) -> np.ndarray:
    w = g.array(weight).astype(np.float64)
    w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w**2).sum(axis=1))


def plan_layer(g: Graph, node: onnx.NodeProto, weight: str, axis: int, keep: np.ndarray) -> Plan:
    """The edits that remove every unit of `node` not in `keep`; raises Refused when that is not safe."""
    plan = Plan()
    if g.uses(weight) > 1:
        raise Refused("its weight is shared by several nodes")
    plan.slices.append((weight, axis, keep))
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        bias = node.input[2]
        if bias not in g.inits:
            raise Refused("its bias is not a constant")
        if g.uses(bias) > 1:
            raise Refused("its bias is shared by several nodes")
        if len(g.inits[bias].dims) == 1 and g.inits[bias].dims[0] > 1:
            plan.slices.append((bias, 0, keep))
        elif node.op_type == "Gemm":
            raise Refused("its bias broadcasts over outputs in a way not handled")
    channel_axis = 1 if node.op_type == "Conv" else -1
    _follow(g, node.output[0], keep, channel_axis, plan, seen=set())
    return plan


def _follow(g: Graph, tensor: str, keep: np.ndarray, axis: int, plan: Plan, seen: set[str]) -> None:
    if tensor in seen:
        return
    seen.add(tensor)
    if tensor in g.outputs:
        raise Refused(f"its units reach the graph output {tensor!r} (outputs keep their shape)")
    if tensor in g.captured:
        raise Refused(f"tensor {tensor!r} is read inside a control-flow body (If/Loop/Scan), which is left untouched")
    users = g.consumers.get(tensor, [])
    if not users:
        raise Refused(f"tensor {tensor!r} has no consumer to follow")
    for user in users:
        op = user.op_type
        if op in ELEMENTWISE:
            if op == "Clip" and any(i and i not in g.inits for i in user.input[1:]):
                raise Refused("a Clip with non-constant bounds")
            _follow(g, user.output[0], keep, axis, plan, seen)
        elif op == "BatchNormalization":
            for p in user.input[1:5]:
                if p not in g.inits or g.uses(p) > 1:
                    raise Refused("a BatchNormalization whose parameters are not its own constants")
                plan.slices.append((p, 0, keep))
            _follow(g, user.output[0], keep, axis, plan, seen)
        elif op == "Conv" and user.input[0] == tensor:
            w = user.input[1]
            if w not in g.inits or g.uses(w) > 1:
                raise Refused("a consumer Conv whose weight is not its own constant")
            group = g.attr(user, "group", 1)
            dims = list(g.inits[w].dims)
            if group == 1:
                plan.slices.append((w, 1, keep))
            elif dims[1] == 1 and group == dims[0]:  # depthwise: its channels go with ours
                plan.slices.append((w, 0, keep))
                if len(user.input) > 2 and user.input[2]:
                    plan.slices.append((user.input[2], 0, keep))
                plan.groups.append((user, w))
                _follow(g, user.output[0], keep, axis, plan, seen)
            else:
                raise Refused(f"a grouped Conv consumer (group {group})")
        elif op in ("Gemm", "MatMul") and user.input[0] == tensor:
            w = user.input[1]
            if w not in g.inits or g.uses(w) > 1 or len(g.inits[w].dims) != 2:
                raise Refused(f"a consumer {op} whose weight is not its own 2-D constant")
            trans = op == "Gemm" and g.attr(user, "transB", 0)
            if op == "Gemm" and g.attr(user, "transA", 0):
                raise Refused("a consumer Gemm with transA")
            shape = g.shapes.get(tensor)
            if axis not in (-1, len(shape) - 1 if shape else -1):
                raise Refused(f"channels reach a {op} on a non-feature axis (flatten them first)")
            plan.slices.append((w, 1 if trans else 0, keep))
        elif op in ("Flatten", "Reshape") and axis == 1:
            shape = g.shapes.get(tensor)
            dims = [d for d in (shape or [])[1:] if d is not None]
            if not shape or len(dims) != len(shape) - 1:
                raise Refused(f"the shape before {op} is not known")
            spatial = int(np.prod(dims[1:])) if len(dims) > 1 else 1
            if op == "Flatten" and g.attr(user, "axis", 1) != 1:
                raise Refused("a Flatten that is not on axis 1")
            if op == "Reshape":
                target = user.input[1]
                if target not in g.inits or g.uses(target) > 1:
                    raise Refused("a Reshape whose shape is not its own constant")
                value = g.array(target)
                features = dims[0] * spatial
                if len(value) != 2 or value[1] not in (-1, features):
                    raise Refused(f"a Reshape to {value.tolist()} (only [N, features] is handled)")
            expanded = (keep[:, None] * spatial + np.arange(spatial)[None, :]).ravel()
            if op == "Reshape" and g.array(user.input[1])[1] != -1:
                plan.constants.append((user.input[1], expanded))
            _follow(g, user.output[0], expanded, -1, plan, seen)
        elif op == "Concat":
            rank = len(g.shapes.get(tensor) or [])
            cat_axis = g.attr(user, "axis", 0)
            if rank == 0 or cat_axis % rank != axis % rank:
                raise Refused("a Concat along another axis")
            offset, kept = 0, []
            for inp in user.input:
                size = (g.shapes.get(inp) or [None] * rank)[axis]
                if size is None:
                    raise Refused("a Concat input of unknown size")
                kept.append(offset + keep if inp == tensor else offset + np.arange(size))
                offset += size
            _follow(g, user.output[0], np.concatenate(kept), axis, plan, seen)
        elif op in ("Add", "Sub", "Mul", "Div", "Sum"):
            raise Refused(f"its channels are coupled through {op} {user.name or user.output[0]!r} (e.g. a residual)")
        else:
            raise Refused(f"consumer {op} {user.name or user.output[0]!r} is not handled")


def apply(model: onnx.ModelProto, plans: list[Plan]) -> None:
    """Apply the plans to the model in place. Every plan speaks in the original index space, so the removals of
    all plans are merged per (initializer, axis) first: two layers feeding one Concat both slice its consumer."""
    by_name = {t.name: t for t in model.graph.initializer}
    originals = {name: numpy_helper.to_array(by_name[name]) for plan in plans for name, _, _ in plan.slices}
    removed: dict[tuple[str, int], set[int]] = {}
    for plan in plans:
        for name, axis, keep in plan.slices:
            size = originals[name].shape[axis]
            removed.setdefault((name, axis), set()).update(set(range(size)) - set(keep.tolist()))
    arrays = dict(originals)
    for (name, axis), gone in sorted(removed.items()):
        keep = np.array(sorted(set(range(originals[name].shape[axis])) - gone), dtype=np.int64)
        arrays[name] = np.take(arrays[name], keep, axis=axis)
    gone_features: dict[str, set[int]] = {}
    for plan in plans:
        for name, kept in plan.constants:
            total = int(numpy_helper.to_array(by_name[name])[1])
            gone_features.setdefault(name, set()).update(set(range(total)) - set(kept.tolist()))
    for name, gone in gone_features.items():
        value = numpy_helper.to_array(by_name[name]).copy()
        value[1] -= len(gone)
        arrays[name] = value
    for plan in plans:
        for node, weight in plan.groups:
            for a in node.attribute:
                if a.name == "group":
                    a.i = int(arrays[weight].shape[0])
    for name, array in arrays.items():
        by_name[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))
    del model.graph.value_info[:]  # shapes changed: let ONNX Runtime infer them again


def prune_structured(
    model: onnx.ModelProto,
    ratio: float | None,
    ratios: dict[str, float] | None,
    criterion: str,
    exclude: set[str],
    exclude_ops: set[str],
    activation_scores: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Prune `model` in place. Returns (rows for the pruned layers, layers left alone with the reason)."""
    g = Graph(model)
    rows, alone, plans = [], [], []
    for node, weight, axis, units in producers(g):
        label = node.name or node.output[0]
        target = ratios[weight] if ratios and weight in ratios else ratio
        if target is None:
            continue
        if weight in exclude or node.name in exclude or node.op_type in exclude_ops:
            alone.append({"layer": label, "weight": weight, "why": "excluded by params"})
            continue
        remove = min(int(np.floor(target * units)), units - 1)  # never the last unit
        if remove <= 0:
            alone.append({"layer": label, "weight": weight, "why": f"{units} unit(s): the ratio removes none"})
            continue
        if activation_scores is not None and node.output[0] in activation_scores:
            scores, how = activation_scores[node.output[0]], "mean |activation|"
        else:
            scores, how = importance(g, weight, axis, criterion), criterion.upper() + " norm"
        keep = np.sort(np.argsort(scores, kind="stable")[remove:])
        try:
            plan = plan_layer(g, node, weight, axis, keep)
        except Refused as exc:
            alone.append({"layer": label, "weight": weight, "why": str(exc)})
            continue
        plans.append(plan)
        rows.append({"layer": label, "weight": weight, "op": node.op_type, "units_before": units,
                     "units_after": int(len(keep)), "importance": how})  # fmt: skip
    apply(model, plans)
    return rows, alone
