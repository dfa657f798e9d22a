"""Structured pruning on an ONNX graph: remove whole output units of Conv (channels) and Gemm/MatMul (neurons),
with everything that depends on them, and leave a layer alone — saying why — when that cannot be done safely.
Layers whose channels are coupled form a dependency group (engine.pruning.dependency: residual Adds/Sums, Concats
feeding them, a ShuffleNet stage's whole trunk) and are pruned together: the same channels go from every member,
ranked by the group's importance (each member's scores normalised and averaged per channel, engine.pruning.
importance). The query, key and value projections of a self-attention block are one group that loses whole heads
(engine.pruning.attention).

For each prunable layer (a Conv, grouped or not, a Gemm, or a MatMul whose second input is a 2-D initializer) the
output tensor is followed forward:
- through element-wise activations, pooling, Dropout/Identity and BatchNormalization (its four parameters are
  sliced with the channels), and through depthwise convolutions (sliced too, `group` updated);
- through element-wise ops with a constant operand (Mul/Add/Sub/Div/PRelu by a per-channel constant: sliced; a
  scalar or broadcast constant, an initializer or a Constant node: unchanged), and through element-wise ops
  between tensors of the same group;
- through a channel shuffle (Reshape [N, G, C/G, ...] -> Transpose -> Reshape), its shape constants updated;
- through Flatten, or a Reshape to [N, features], after a Conv: each channel is a block of H*W features (shape
  inference gives H*W; an explicit feature count in the Reshape's shape constant is updated);
- through Concat along the channel axis: the kept channels move to their offset in the concatenation;
- into consumers that absorb the change: a Conv (its input channels; a grouped Conv, per group, the channels of
  that group which stay), a Gemm or a MatMul (input rows).
Grouped convolutions need as many channels kept in each of their groups (outputs and inputs alike), and a channel
shuffle the same channels in each of its blocks: those are constraints of the selection, which is then solved
exactly (engine.pruning.importance.select_equal_counts). Anything else stops the layer (and its whole group): an
element-wise op with a tensor of another group or of no prunable layer, a graph output (outputs keep their
shape), Softmax/LRN (they normalise across channels), a weight shared by several nodes, unknown shapes, other
ops. Such layers are left alone with the reason.

Importance of a unit: the L1 or L2 norm of its weights (output row of the producer), or, data-driven, the mean
absolute activation of its output on sample inputs. The lowest-importance units go; at least one always stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from engine.pruning.attention import Attention, attention_blocks, plan_attention
from engine.pruning.dependency import (
    BINARY,
    CHANNEL_WISE,
    Graph,
    Groups,
    Refused,
    Space,
    depthwise,
    unshare_constants,
)
from engine.pruning.importance import (
    aligned,
    class_importance,
    importance,
    select,
    select_equal_counts,
)
from engine.pruning.surgery import Plan, apply

ELEMENTWISE = CHANNEL_WISE - {"BatchNormalization"}


def producers(g: Graph) -> list[tuple[onnx.NodeProto, str, int, int]]:
    """(node, weight name, output-unit axis of the weight, unit count) for every candidate layer."""
    out = []
    for node in g.model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in g.inits:
            w = g.inits[node.input[1]]
            if not depthwise(node, g.inits) and len(w.dims) >= 3:  # group 1, or grouped (equal counts per group)
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


def plan_layer(
    g: Graph, node: onnx.NodeProto, weight: str, axis: int, keep: np.ndarray, groups: Groups | None = None
) -> Plan:
    """The edits that remove every unit of `node` not in `keep`; raises Refused when that is not safe. With
    `groups`, element-wise ops between tensors of this layer's group are followed (the group's other members are
    planned with the same `keep`)."""
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
    _follow(g, node.output[0], keep, channel_axis, plan, seen=set(), coupled=groups)
    return plan


def _follow(
    g: Graph,
    tensor: str,
    keep: np.ndarray,
    axis: int,
    plan: Plan,
    seen: set[str],
    coupled: Groups | None = None,
) -> None:
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
            if op == "Clip" and any(i and i not in g.inits and i not in g.constant_nodes for i in user.input[1:]):
                raise Refused("a Clip with non-constant bounds")
            _follow(g, user.output[0], keep, axis, plan, seen, coupled)
        elif op == "BatchNormalization":
            for p in user.input[1:5]:
                if p not in g.inits or g.uses(p) > 1:
                    raise Refused("a BatchNormalization whose parameters are not its own constants")
                plan.slices.append((p, 0, keep))
            _follow(g, user.output[0], keep, axis, plan, seen, coupled)
        elif op == "Conv" and user.input[0] == tensor:
            if _into_conv(g, user, keep, plan):  # depthwise: its channels go with ours, on to its output
                _follow(g, user.output[0], keep, axis, plan, seen, coupled)
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
        elif op == "Reshape" and axis == 1 and g.shuffle(user) is not None:
            _through_shuffle(g, user, keep, plan, seen, coupled)
        elif op in ("Flatten", "Reshape") and axis == 1:
            expanded = _to_features(g, user, tensor, keep, plan)
            _follow(g, user.output[0], expanded, -1, plan, seen, coupled)
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
            _follow(g, user.output[0], np.concatenate(kept), axis, plan, seen, coupled)
        elif op in BINARY:
            _through_binary(g, user, tensor, keep, axis, plan, coupled)
            _follow(g, user.output[0], keep, axis, plan, seen, coupled)
        elif op in ("Softmax", "LogSoftmax", "LRN"):
            across = "neighbouring channels" if op == "LRN" else "all channels (a classifier's output)"
            raise Refused(
                f"{op} {user.name or user.output[0]!r} normalises across {across}: removing some changes the rest"
            )
        else:
            raise Refused(f"consumer {op} {user.name or user.output[0]!r} is not handled")


def _into_conv(g: Graph, user: onnx.NodeProto, keep: np.ndarray, plan: Plan) -> bool:
    """A Conv reading our channels: group 1 drops its input channels; depthwise drops whole channels (True: follow
    its output); grouped drops, for the outputs of each group, the input channels of that group which go (the
    selection keeps equal counts per group: engine.pruning.dependency's partitions)."""
    w = user.input[1]
    if w not in g.inits or g.uses(w) > 1:
        raise Refused("a consumer Conv whose weight is not its own constant")
    group = g.attr(user, "group", 1)
    if group == 1:
        plan.slices.append((w, 1, keep))
        return False
    if depthwise(user, g.inits):
        plan.slices.append((w, 0, keep))
        if len(user.input) > 2 and user.input[2]:
            plan.slices.append((user.input[2], 0, keep))
        plan.groups.append((user, w))
        return True
    plan.gathers.append((w, keep, group))
    return False


def _to_features(g: Graph, user: onnx.NodeProto, tensor: str, keep: np.ndarray, plan: Plan) -> np.ndarray:
    """Through Flatten, or a Reshape to [N, features], after a Conv: each channel is a block of H*W features."""
    op = user.op_type
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
        if len(value) != 2 or value[1] not in (-1, dims[0] * spatial):
            raise Refused(f"a Reshape to {value.tolist()} (only [N, features] is handled)")
    expanded = (keep[:, None] * spatial + np.arange(spatial)[None, :]).ravel()
    if op == "Reshape" and g.array(user.input[1])[1] != -1:
        plan.constants.append((user.input[1], expanded))
    return expanded


def _through_shuffle(
    g: Graph, first: onnx.NodeProto, keep: np.ndarray, plan: Plan, seen: set[str], coupled: Groups | None
) -> None:
    """Our channels through a channel shuffle: kept the same in each of the G blocks (the selection joins each
    column's channels), they stay whole columns of the [G, C/G] grid, land at i * G + g, and the two shape
    constants shrink."""
    found = g.shuffle(first)
    assert found is not None
    groups_, _, last = found
    shape, flat = g.array(first.input[1]), g.array(last.input[1])
    channels = int(shape[1] * shape[2]) if shape[2] > 0 else None
    if channels is None or not aligned(keep, channels, groups_):
        raise Refused(f"a channel shuffle {first.name or first.output[0]!r} whose blocks do not keep the same channels")
    rel = keep[keep < channels // groups_]
    plan.reshapes.append((first.input[1], 2, len(rel)))
    if flat[1] > 0:
        plan.reshapes.append((last.input[1], 1, len(rel) * groups_))
    after = np.sort((rel[:, None] * groups_ + np.arange(groups_)[None, :]).ravel())
    _follow(g, last.output[0], after, 1, plan, seen, coupled)


def _through_binary(
    g: Graph,
    user: onnx.NodeProto,
    tensor: str,
    keep: np.ndarray,
    axis: int,
    plan: Plan,
    coupled: Groups | None,
) -> None:
    """An element-wise op on our channels: its constant operands are sliced along the channel axis (a per-channel
    constant) or left (broadcast size 1); its other tensor operands must carry the same group's channels."""
    groups = coupled
    label = f"{user.op_type} {user.name or user.output[0]!r}"
    fixed = {i: list(g.inits[i].dims) for i in user.input if i in g.inits}
    fixed |= {i: list(g.constant_nodes[i].shape) for i in user.input if i in g.constant_nodes}
    variable = [i for i in user.input if i and i not in fixed]
    if len(variable) > 1 and (groups is None or not groups.same(variable)):
        raise Refused(f"its channels are coupled through {label} with a tensor of another group (e.g. a residual)")
    rank = len(g.shapes.get(tensor) or [])
    for c, dims in fixed.items():
        if not dims or all(d == 1 for d in dims):
            continue  # a scalar or an all-broadcast constant
        if rank == 0:
            raise Refused(f"{label}: the rank of its input is not known, so its constant cannot be aligned")
        at = (axis % rank) - (rank - len(dims))  # numpy broadcasting aligns trailing axes
        if at < 0 or dims[at] == 1:
            continue
        if c not in g.inits:
            raise Refused(f"{label}: its per-channel constant {c!r} is a Constant node (run simplify first)")
        if g.uses(c) > 1:
            raise Refused(f"{label}: its per-channel constant {c!r} is shared by several nodes")
        plan.slices.append((c, at, keep))


def dependency_groups(
    g: Graph, layers: list[tuple[onnx.NodeProto, str, int, int]], coupled: str = "group"
) -> tuple[Groups, dict[str, Attention]]:
    """The groups pruning decides on: channel dependencies (engine.pruning.dependency), with each self-attention
    block's query, key and value joined (they lose the same heads). Also (root -> attention block)."""
    groups = g.groups(layers)
    heads: dict[str, Attention] = {}
    for found in attention_blocks(g) if coupled == "group" else []:
        groups.tie(found.query, found.key)
        heads[groups.tie(found.query, found.value)] = found
    return groups, heads


def _select(
    space: Space, scores: dict[str, np.ndarray], ratio: float, block: Attention | None
) -> tuple[dict[str, np.ndarray] | str, str]:
    """Each member's kept channels, and how they were chosen; or why nothing is removed."""
    members = list(space.class_of)
    value = class_importance(scores, space.class_of, space.n)
    if block is not None:  # whole heads, in the query's channel order (key and value are joined to it)
        keep = select(value[space.class_of[block.query]], ratio, block.head_dim)
        if keep is None:
            return f"{space.n} unit(s): the ratio removes none", ""
        return {w: keep for w in members}, f", whole heads of {block.head_dim}"
    partial = any(len(np.unique(c)) < space.n for c in space.class_of.values())
    if not space.constraints and not partial:
        kept = select(value, ratio)
        how = ""
    else:
        every_member = [[(np.bincount(c, minlength=space.n).astype(float), 0)] for c in space.class_of.values()]
        kept = select_equal_counts(value, ratio, space.constraints + every_member)
        how = f", equal counts per group of {len(space.constraints)} grouped conv(s)" if space.constraints else ""
        how += ", shuffle-aligned" if any(len(np.unique(c)) < len(c) for c in space.class_of.values()) else ""
    if kept is None:
        return f"{space.n} channel(s) in {len(space.constraints)} equal-count constraint(s): none can go", ""
    return {w: np.flatnonzero(np.isin(space.class_of[w], kept)) for w in members}, how


def prune_structured(
    model: onnx.ModelProto,
    ratio: float | None,
    ratios: dict[str, float] | None,
    criterion: str,
    exclude: set[str],
    exclude_ops: set[str],
    activation_scores: dict[str, np.ndarray] | None = None,
    coupled: str = "group",
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Prune `model` in place, group by group. Returns (rows for the pruned layers, layers left alone with the
    reason). A group's ratio is the first of its members' entries in `ratios`, else `ratio`; excluding one member
    leaves its whole group alone. `coupled` "leave": layer by layer, coupled layers left whole (for comparison)."""
    unshare_constants(model)
    g = Graph(model)
    layers = producers(g)
    groups, heads = dependency_groups(g, layers, coupled)
    by_weight = {weight: (node, axis, units) for node, weight, axis, units in layers}
    rows: list[dict[str, Any]] = []
    alone: list[dict[str, str]] = []
    plans: list[Plan] = []
    for root, members in groups.members().items():
        labels = {w: by_weight[w][0].name or by_weight[w][0].output[0] for w in members}
        together = f" (with {len(members) - 1} coupled layer(s) of its group)" if len(members) > 1 else ""

        def leave(why: str) -> None:
            alone.extend({"layer": labels[w], "weight": w, "why": why + together} for w in members)  # noqa: B023

        target = next((ratios[w] for w in members if ratios and w in ratios), ratio)
        if target is None:
            continue
        excluded = [w for w in members if w in exclude or by_weight[w][0].name in exclude]
        excluded += [w for w in members if by_weight[w][0].op_type in exclude_ops]
        if excluded:
            leave(
                "excluded by params"
                if excluded[0] == root or len(members) == 1
                else f"{labels[excluded[0]]} is excluded by params"
            )
            continue
        if root in groups.blocked:
            leave(groups.blocked[root])
            continue
        if coupled != "group" and len(members) > 1:
            leave("coupled with other layers, left whole (coupled: leave)")
            continue
        scores, how = {}, ""
        for w in members:
            node, axis, _ = by_weight[w]
            if activation_scores is not None and node.output[0] in activation_scores:
                scores[w] = activation_scores[node.output[0]]
                how = "mean |activation|"
            else:
                scores[w] = importance(g.array(w), axis, criterion)
                how = how or criterion.upper() + " norm"
        how += f", group of {len(members)}" if len(members) > 1 else ""
        block = heads.get(root)
        keeps, chosen = _select(groups.space(members), scores, target, block)
        if isinstance(keeps, str):
            leave(keeps)
            continue
        try:
            if block is not None:
                planned = [plan_attention(g, block, keeps[block.query])]
            else:
                planned = [plan_layer(g, by_weight[w][0], w, by_weight[w][1], keeps[w], groups) for w in members]
        except Refused as exc:
            leave(str(exc))
            continue
        plans += planned
        first = labels[members[0]]  # a group is named by its first member in graph order
        for w in members:
            node, _, n = by_weight[w]
            rows.append({"layer": labels[w], "weight": w, "op": node.op_type, "units_before": n,
                         "units_after": len(keeps[w]), "importance": how + chosen, "group": first})  # fmt: skip
    apply(model, plans)
    return rows, alone
