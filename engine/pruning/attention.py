"""Attention heads as one dependency group: the query, key and value projections of a self-attention block lose
the same whole heads, and the output projection loses the rows that read them.

The block is found by its shape in the graph, as PyTorch exports multi-head attention (BERT, MiniLM, ViT):
for each score MatMul between two computed tensors, each side traced back through Transpose, the head-split
Reshape ([batch, seq, heads or -1, head_dim]) and an Add of a bias to a MatMul/Gemm with a 2-D weight (query, key);
forward through scaling, masking and Softmax to the context MatMul, whose other side traces back to the value
projection; the context through Transpose and the merging Reshape ([batch, seq, -1]) into the output projection
(a MatMul with a 2-D weight). The head count must be inferred (-1) in the split, the merged width inferred too
(-1): then removing heads changes no shape constant. Anything else is not an attention block here, and its
projections are left to the ordinary rules (which refuse the Reshape, saying so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.pruning.dependency import Graph, Refused
from engine.pruning.surgery import Plan


@dataclass
class Attention:
    query: str  # weight names of the projections ([in, out] MatMul weights)
    key: str
    value: str
    biases: list[str]  # the projections' bias initializers ([out])
    output: str  # the output projection's weight: its rows read the heads
    head_dim: int
    label: str


def _constant(g: Graph, name: str) -> np.ndarray | None:
    if name in g.inits:
        return g.array(name)
    return g.constant_nodes.get(name)


def _shape_values(g: Graph, name: str) -> list[int | None] | None:
    """A Reshape's target: an initializer, or a Concat of pieces (constants known, computed ones None)."""
    value = _constant(g, name)
    if value is not None:
        return [int(v) for v in value.reshape(-1)]
    node = g.made_by.get(name)
    if node is None or node.op_type != "Concat":
        return None
    out: list[int | None] = []
    for piece in node.input:
        known = _constant(g, piece)
        out += [int(v) for v in known.reshape(-1)] if known is not None else [None]
    return out


def _projection(g: Graph, tensor: str) -> tuple[str, str | None, int] | None:
    """Back from a head-shaped tensor to its projection: (weight, bias, head_dim) or None."""
    node = g.made_by.get(tensor)
    while node is not None and node.op_type == "Transpose":
        node = g.made_by.get(node.input[0])
    if node is None or node.op_type != "Reshape":
        return None
    shape = _shape_values(g, node.input[1])
    if not shape or len(shape) != 4 or shape[2] != -1 or not shape[3] or shape[3] <= 0:
        return None
    head_dim = int(shape[3])
    if g.uses(node.input[0]) != 1:  # the projection's output feeds only this head split
        return None
    node, bias = g.made_by.get(node.input[0]), None
    if node is not None and node.op_type == "Add":
        consts = [i for i in node.input if i in g.inits and len(g.inits[i].dims) == 1]
        others = [i for i in node.input if i not in consts]
        if len(consts) != 1 or len(others) != 1 or g.uses(others[0]) != 1:
            return None
        bias, node = consts[0], g.made_by.get(others[0])
    if (
        node is None
        or node.op_type != "MatMul"
        or node.input[1] not in g.inits
        or len(g.inits[node.input[1]].dims) != 2
    ):
        return None
    return node.input[1], bias, head_dim


def _output_projection(g: Graph, context: str) -> str | None:
    """Forward from the context MatMul: Transpose, the merging Reshape to [batch, seq, -1], the output MatMul."""
    tensor = context
    for op in ("Transpose", "Reshape", "MatMul"):
        users = g.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op:
            return None
        node = users[0]
        if op == "Reshape":
            shape = _shape_values(g, node.input[1])
            if not shape or len(shape) != 3 or shape[2] != -1:
                return None
        if op == "MatMul":
            weight = node.input[1]
            return weight if weight in g.inits and len(g.inits[weight].dims) == 2 else None
        tensor = node.output[0]
    return None


def attention_blocks(g: Graph) -> list[Attention]:
    blocks = []
    for scores in g.model.graph.node:
        if scores.op_type != "MatMul" or any(i in g.inits for i in scores.input):
            continue
        query, key = (_projection(g, i) for i in scores.input)
        if query is None or key is None or query[2] != key[2]:
            continue
        tensor, context = scores.output[0], None
        while context is None:  # scaling, masking, Softmax, then the context MatMul
            users = g.consumers.get(tensor, [])
            if len(users) != 1:
                break
            node = users[0]
            if node.op_type == "MatMul" and node.input[0] == tensor:
                context = node
            elif node.op_type in ("Mul", "Div", "Add", "Softmax", "Where", "Cast"):
                tensor = node.output[0]
            else:
                break
        value = _projection(g, context.input[1]) if context is not None else None
        out = _output_projection(g, context.output[0]) if context is not None else None
        if value is None or out is None or value[2] != query[2]:
            continue
        widths = {int(g.inits[w].dims[1]) for w in (query[0], key[0], value[0])}
        if len(widths) != 1 or next(iter(widths)) % query[2] or int(g.inits[out].dims[0]) != next(iter(widths)):
            continue
        biases = [b for b in (query[1], key[1], value[1]) if b is not None]
        blocks.append(Attention(query[0], key[0], value[0], biases, out, query[2], scores.name or scores.output[0]))
    return blocks


def plan_attention(g: Graph, block: Attention, keep: np.ndarray) -> Plan:
    """Whole heads out of an attention block: the query/key/value columns and biases, the output rows."""
    names = [block.query, block.key, block.value, *block.biases, block.output]
    shared = [n for n in names if g.uses(n) > 1]
    if shared:
        raise Refused(f"attention {block.label!r}: {shared[0]!r} is shared by several nodes")
    plan = Plan()
    plan.slices += [(w, 1, keep) for w in (block.query, block.key, block.value)]
    plan.slices += [(b, 0, keep) for b in block.biases] + [(block.output, 0, keep)]
    return plan
