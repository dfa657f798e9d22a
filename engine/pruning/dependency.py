"""What must be removed together: channel dependency groups on an ONNX graph (Torch-Pruning's DepGraph idea, on
the ONNX graph itself).

Every prunable layer (engine.pruning.structured.producers) opens a channel space on its output. The space flows
forward through ops that keep channels apart: element-wise activations, pooling, BatchNormalization, depthwise
convolutions, and element-wise ops with a constant operand (Mul/Add/Sub/Div/PRelu by a per-channel or broadcast
constant: a BatchNorm exported as Mul + Add, a learned scale). An element-wise op between two tensors (Add, Sub,
Mul, Div, Sum, Max, Min, Mean: a residual connection) couples the spaces of its inputs: their producers form one
group, pruned together with the same kept channels, so a residual stage shrinks as a whole instead of being left
whole. A group coupled to a tensor no prunable layer produces (a graph input, a Concat's output) is blocked, with
the reason. Ops that consume channels (a Conv's or Gemm's input, Flatten, Concat) end the flow here; planning
(structured.plan_layer) follows them and slices the consumers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

CHANNEL_WISE = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus",
    "Gelu", "Erf", "Dropout", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization",
}  # fmt: skip
BINARY = {"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "PRelu"}


class Refused(Exception):
    """This layer cannot be pruned safely; the message says why."""


def unshare_constants(model: onnx.ModelProto) -> int:
    """PyTorch's exporter shares equal constants (every zero bias of a freshly initialised model) through Identity
    nodes; each such output becomes an initializer of its own, so one layer's cut does not reach the others.
    Returns how many were made."""
    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    kept, made = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
            made += 1
        else:
            kept.append(node)
    if made:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        used = {i for n in kept for i in n.input} | outputs
        alive = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(alive)
    return made


class Graph:
    """The model's graph as planning reads it: initializers, consumers, outputs, inferred shapes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.made_by = {o: n for n in model.graph.node for o in n.output}  # tensor -> the node that produces it
        self.outputs = {o.name for o in model.graph.output}
        self.constant_nodes = {  # Constant nodes' values: operands as fixed as initializers (a Gelu's sqrt(2))
            n.output[0]: numpy_helper.to_array(n.attribute[0].t)
            for n in model.graph.node
            if n.op_type == "Constant" and n.output and n.attribute and n.attribute[0].name == "value"
        }
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

    def groups(self, layers: list[tuple[onnx.NodeProto, str, int, int]]) -> Groups:
        """The dependency groups of `layers` (node, weight, axis, units)."""
        outputs = {node.output[0]: weight for node, weight, _, _ in layers}
        units = {w: u for _, w, _, u in layers}
        return Groups(self.model.graph, self.inits, outputs, units, set(self.constant_nodes))


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


class Groups:
    """Union-find over the prunable layers (keyed by weight name) joined by element-wise ops between tensors."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        inits: dict[str, onnx.TensorProto],
        layers: dict[str, str],
        units: dict[str, int],
        fixed: set[str] | None = None,
    ) -> None:
        """`layers`: output tensor -> weight name of every prunable layer; `units`: weight name -> unit count."""
        self.parent = {w: w for w in layers.values()}
        self.units = units
        self.blocked: dict[str, str] = {}
        self.space: dict[str, str] = {}  # tensor -> a weight name of the group whose channels it carries
        for node in graph.node:
            out = node.output[0] if node.output else ""
            if out in layers:
                self.space[out] = layers[out]
                continue
            tracked = [i for i in node.input if i in self.space]
            if not tracked:
                continue
            if node.op_type in CHANNEL_WISE or depthwise(node, inits):
                if node.input[0] in self.space:
                    self.space[out] = self.space[node.input[0]]
            elif node.op_type in BINARY:
                self._couple(node, [i for i in node.input if i and i not in inits and i not in (fixed or set())])

    def _couple(self, node: onnx.NodeProto, variable: list[str]) -> None:
        tracked = [i for i in variable if i in self.space]
        root = self.find(self.space[tracked[0]])
        for i in tracked[1:]:
            root = self.union(root, self.space[i])
        untracked = [i for i in variable if i not in self.space]
        if untracked:
            self.block(
                root,
                f"its channels are coupled through {node.op_type} {node.name or node.output[0]!r} with "
                f"{untracked[0]!r}, which no prunable layer produces",
            )
        self.space[node.output[0]] = root

    def find(self, weight: str) -> str:
        while self.parent[weight] != weight:
            self.parent[weight] = self.parent[self.parent[weight]]
            weight = self.parent[weight]
        return weight

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        self.parent[rb] = ra
        if rb in self.blocked:
            self.blocked.setdefault(ra, self.blocked.pop(rb))
        if self.units[ra] != self.units[rb]:
            self.block(ra, f"it is coupled with layers of another width ({self.units[ra]} vs {self.units[rb]} units)")
        return ra

    def block(self, weight: str, why: str) -> None:
        self.blocked.setdefault(self.find(weight), why)

    def same(self, tensors: list[str], weight: str) -> bool:
        """Every tensor carries the channels of `weight`'s group."""
        root = self.find(weight)
        return all(t in self.space and self.find(self.space[t]) == root for t in tensors)

    def members(self) -> dict[str, list[str]]:
        """Root -> member weights, in graph order."""
        out: dict[str, list[str]] = {}
        for w in self.parent:
            out.setdefault(self.find(w), []).append(w)
        return out


def depthwise(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A depthwise Conv (one input channel per group, as many groups as channels): it keeps channels apart."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
    dims = list(inits[node.input[1]].dims)
    return group > 1 and len(dims) > 1 and dims[1] == 1 and group == dims[0]
