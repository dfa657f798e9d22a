"""What must be removed together: channel dependency groups on an ONNX graph (Torch-Pruning's DepGraph idea, on
the ONNX graph itself).

Every prunable layer (engine.pruning.structured.producers) gives each of its output channels an id, and the ids
flow forward through ops that keep channels apart (element-wise activations, pooling, BatchNormalization,
depthwise convolutions, element-wise ops with a constant operand such as a BatchNorm exported as Mul + Add),
through Concat (the inputs' ids in a row) and through channel shuffles (permuted). An element-wise op between two
tensors (Add, Sub, Mul, Div, Sum, Max, Min, Mean: a residual connection) joins the ids of its inputs channel by
channel: those channels are one, and the layers they come from one group, pruned together, so a residual stage
or a ShuffleNet trunk (Concats of a stage's first conv and the pooled previous stage, Sums of every unit) shrinks
as a whole instead of being left whole. Grouped convolutions and shuffles add constraints (equal counts per
group, aligned blocks) for the selection. A group coupled to a tensor no prunable layer produces (a graph input)
is blocked, with the reason. Planning (structured.plan_layer) follows the consumers and slices them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from engine.inspect import attribute

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
        return attribute(node, name, default)

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, []))

    def groups(self, layers: list[tuple[onnx.NodeProto, str, int, int]]) -> Groups:
        """The dependency groups of `layers` (node, weight, axis, units)."""
        return Groups(self, {node.output[0]: weight for node, weight, _, _ in layers}, {w: u for _, w, _, u in layers})

    def shuffle(self, first: onnx.NodeProto) -> tuple[int, onnx.NodeProto, onnx.NodeProto] | None:
        """A channel shuffle: Reshape [N, G, C/G, ...] -> Transpose swapping axes 1 and 2 -> Reshape [N, C, ...],
        each the only consumer of the one before, the shapes own constants. (G, transpose, last reshape) or None."""
        if first.op_type != "Reshape" or first.input[1] not in self.inits or self.uses(first.input[1]) > 1:
            return None
        shape = self.array(first.input[1])
        nexts = self.consumers.get(first.output[0], [])
        if len(shape) < 4 or len(nexts) != 1 or nexts[0].op_type != "Transpose":
            return None
        transpose = nexts[0]
        perm = list(self.attr(transpose, "perm", []))
        if perm[:3] != [0, 2, 1] or perm[3:] != list(range(3, len(perm))):
            return None
        lasts = self.consumers.get(transpose.output[0], [])
        if len(lasts) != 1 or lasts[0].op_type != "Reshape" or lasts[0].input[1] not in self.inits:
            return None
        if self.uses(lasts[0].input[1]) > 1 or len(self.array(lasts[0].input[1])) != len(shape) - 1 or shape[1] <= 0:
            return None
        return int(shape[1]), transpose, lasts[0]


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
    """Which channels go together, and which layers therefore form one group.

    Every output channel of every prunable layer gets an id, and the ids flow forward with the channels (`maps`:
    tensor -> the id of each channel along its channel axis, -1 for a channel no prunable layer produces):
    unchanged through channel-wise ops and depthwise convolutions, concatenated through a Concat along the channel
    axis, permuted through a channel shuffle. An element-wise op between tensors joins the ids of its inputs
    channel by channel (union-find): joined channels are one channel of the group and are kept or removed together.
    Layers with joined channels form one group (a residual stage, a ShuffleNet trunk of Concats and Sums).
    Two constraints are recorded for the selection:
    - equal counts (`partitions`): a grouped Conv's output channels, and the input channels it reads, come in
      `group` blocks that must keep as many channels each (its weight stays one tensor, `group` unchanged);
    - aligned blocks: a channel shuffle moves channel i of block g to i * G + g, which keeps the pruned channels in
      order only when every block keeps the same i: the G channels of column i are joined.
    A group whose channels are joined to channels no prunable layer produces (a graph input) is blocked, with the
    reason.
    """

    def __init__(self, g: Graph, layers: dict[str, str], units: dict[str, int]) -> None:
        """`layers`: output tensor -> weight name of every prunable layer; `units`: weight name -> unit count."""
        self.parent = {w: w for w in layers.values()}  # layer-level union-find
        self.blocked: dict[str, str] = {}
        self.ids: dict[str, np.ndarray] = {}  # weight -> the channel ids of its outputs
        self.maps: dict[str, np.ndarray] = {}  # tensor -> channel ids along its channel axis (-1: untracked)
        self.axis: dict[str, int] = {}  # tensor -> its channel axis (1 after a Conv, -1 after a Gemm/MatMul)
        self.partitions: list[tuple[np.ndarray, int]] = []  # (channel ids of a tensor, equal-count blocks)
        self.owner: list[str] = []  # channel id -> weight
        self._channel: list[int] = []  # channel-level union-find
        self._pending: list[tuple[int, str]] = []  # (channel id, why its group is blocked)
        fixed = set(g.inits) | set(g.constant_nodes)
        for node in g.model.graph.node:
            out = node.output[0] if node.output else ""
            grouped = node.op_type == "Conv" and g.attr(node, "group", 1) > 1 and not depthwise(node, g.inits)
            if grouped and node.input[0] in self.maps:
                self.partitions.append((self.maps[node.input[0]], g.attr(node, "group", 1)))
            if out in layers:
                w = layers[out]
                start = len(self.owner)
                self.owner += [w] * units[w]
                self._channel += list(range(start, start + units[w]))
                self.ids[w] = self.maps[out] = np.arange(start, start + units[w])
                self.axis[out] = 1 if node.op_type == "Conv" else -1
                if grouped:
                    self.partitions.append((self.ids[w], g.attr(node, "group", 1)))
            elif not any(i in self.maps for i in node.input):
                continue
            elif node.op_type in CHANNEL_WISE or depthwise(node, g.inits):
                self._carry(node.input[0], out)
            elif node.op_type in BINARY:
                self._couple(node, [i for i in node.input if i and i not in fixed])
            elif node.op_type == "Concat":
                self._concat(g, node)
            elif (found := g.shuffle(node)) is not None and node.input[0] in self.maps:
                self._shuffle(node.input[0], found[0], found[2].output[0])
        self._join_layers()

    def _carry(self, src: str, dst: str) -> None:
        if src in self.maps:
            self.maps[dst], self.axis[dst] = self.maps[src], self.axis[src]

    def _couple(self, node: onnx.NodeProto, variable: list[str]) -> None:
        tracked = [i for i in variable if i in self.maps]
        first = self.maps[tracked[0]]
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        untracked = [i for i in variable if i not in self.maps or len(self.maps[i]) != len(first)]
        for i in tracked[1:]:
            other = self.maps[i]
            if len(other) != len(first):
                continue
            for a, b in zip(first.tolist(), other.tolist(), strict=True):
                if a >= 0 and b >= 0:
                    self._join(a, b)
                elif a >= 0 or b >= 0:
                    self._pending.append(
                        (max(a, b), f"its channels are coupled through {label} with channels no prunable layer makes")
                    )
        if untracked:
            why = f"its channels are coupled through {label} with {untracked[0]!r}, which no prunable layer produces"
            for m in tracked:
                self._pending += [(i, why) for i in self.maps[m].tolist() if i >= 0][:1]
        self._carry(tracked[0], node.output[0])

    def _concat(self, g: Graph, node: onnx.NodeProto) -> None:
        """Along the channel axis, the output's channels are the inputs' in a row (untracked ones as -1)."""
        tracked = next(i for i in node.input if i in self.maps)
        rank = len(g.shapes.get(tracked) or [])
        if rank == 0 or g.attr(node, "axis", 0) % rank != self.axis[tracked] % rank:
            return
        parts = []
        for i in node.input:
            size = (g.shapes.get(i) or [None] * rank)[self.axis[tracked]]
            if i not in self.maps and size is None:
                return
            parts.append(self.maps[i] if i in self.maps else np.full(int(size or 0), -1))
        self.maps[node.output[0]], self.axis[node.output[0]] = np.concatenate(parts), self.axis[tracked]

    def _shuffle(self, src: str, groups: int, dst: str) -> None:
        ids = self.maps[src]
        if len(ids) % groups:
            return
        grid = ids.reshape(groups, -1)
        for column in grid.T.tolist():
            known = [i for i in column if i >= 0]
            for i in known[1:]:
                self._join(known[0], i)
            if known and len(known) < len(column):
                self._pending.append((known[0], "a channel shuffle mixes its channels with untracked ones"))
        self.maps[dst], self.axis[dst] = grid.T.ravel(), 1

    def _root(self, i: int) -> int:
        while self._channel[i] != i:
            self._channel[i] = self._channel[self._channel[i]]
            i = self._channel[i]
        return i

    def _join(self, a: int, b: int) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._channel[rb] = ra

    def _join_layers(self) -> None:
        for i, w in enumerate(self.owner):
            self.union(w, self.owner[self._root(i)])
        for ids, _ in self.partitions:  # a constraint is decided within one group
            known = [self.owner[i] for i in ids.tolist() if i >= 0]
            for w in known[1:]:
                self.union(known[0], w)
        for i, why in self._pending:
            self.block(self.owner[i], why)

    def tie(self, a: str, b: str) -> str:
        """Join two layers of equal width channel by channel (an attention block's query, key and value)."""
        for x, y in zip(self.ids[a].tolist(), self.ids[b].tolist(), strict=True):
            self._join(x, y)
        return self.union(a, b)

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
        return ra

    def block(self, weight: str, why: str) -> None:
        self.blocked.setdefault(self.find(weight), why)

    def same(self, tensors: list[str]) -> bool:
        """The tensors carry the same channels of one group, channel by channel."""
        if any(t not in self.maps for t in tensors):
            return False
        rows = [self.maps[t] for t in tensors]
        if len({len(r) for r in rows}) != 1 or any((r < 0).any() for r in rows):
            return False
        roots = [[self._root(i) for i in r.tolist()] for r in rows]
        return all(r == roots[0] for r in roots[1:])

    def members(self) -> dict[str, list[str]]:
        """Root -> member weights, in graph order."""
        out: dict[str, list[str]] = {}
        for w in self.parent:
            out.setdefault(self.find(w), []).append(w)
        return out

    def space(self, members: list[str]) -> Space:
        """The group's selection space: its distinct channels (classes of joined channel ids), each member's
        channels as classes, and its equal-count constraints over the classes."""
        roots = sorted({self._root(i) for w in members for i in self.ids[w].tolist()})
        index = {r: k for k, r in enumerate(roots)}
        class_of = {w: np.array([index[self._root(i)] for i in self.ids[w].tolist()], dtype=np.int64) for w in members}
        constraints = []
        mine = set(members)
        for ids, blocks in self.partitions:
            if not any(i >= 0 and self.owner[i] in mine for i in ids.tolist()) or len(ids) % blocks:
                continue
            rows = []
            for block in ids.reshape(blocks, -1):
                coeff = np.zeros(len(roots))
                for i in block.tolist():
                    if i >= 0:
                        coeff[index[self._root(i)]] += 1
                rows.append((coeff, int((block < 0).sum())))
            constraints.append(rows)
        return Space(len(roots), class_of, constraints)


@dataclass
class Space:
    """A group's channels as the selection sees them: `n` classes (channels kept or removed together), each
    member's output channels as class indices, equal-count constraints (per constraint, per block: how many
    channels of each class the block holds, and how many channels outside the group it holds, always kept)."""

    n: int
    class_of: dict[str, np.ndarray]
    constraints: list[list[tuple[np.ndarray, int]]]


def depthwise(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A depthwise Conv (one input channel per group, as many groups as channels): it keeps channels apart."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    group = attribute(node, "group", 1)
    dims = list(inits[node.input[1]].dims)
    return group > 1 and len(dims) > 1 and dims[1] == 1 and group == dims[0]
