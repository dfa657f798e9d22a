"""The surgery of structured pruning: a layer's edits as a Plan (slices of initializers, `group` attributes, shape
constants), and their application to the model, merged across plans."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass
class Plan:
    """Edits for one layer, in the original graph's index space: initializer slices (name, axis, kept indices),
    depthwise `group` attributes to follow a weight's channel count, Reshape constants (name, kept features)."""

    slices: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    groups: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)
    constants: list[tuple[str, np.ndarray]] = field(default_factory=list)
    reshapes: list[tuple[str, int, int]] = field(default_factory=list)  # (shape constant, index, new value)
    gathers: list[tuple[str, np.ndarray, int]] = field(default_factory=list)  # grouped Conv: (weight, kept, groups)


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
        for name, index, new in plan.reshapes:
            changed = arrays.get(name, numpy_helper.to_array(by_name[name])).copy()
            changed[index] = new
            arrays[name] = changed
    for plan in plans:
        for node, weight in plan.groups:
            for a in node.attribute:
                if a.name == "group":
                    a.i = int(arrays[weight].shape[0])
    _gather(plans, arrays, by_name)
    for name, array in arrays.items():
        by_name[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))
    del model.graph.value_info[:]  # shapes changed: let ONNX Runtime infer them again


def _gather(plans: list[Plan], arrays: dict[str, np.ndarray], by_name: dict[str, onnx.TensorProto]) -> None:
    """The input channels of grouped Convs: the kept channels (merged over plans) of input block b are the ones
    the outputs of group b keep reading. Every block keeps as many (the selection's equal-count constraints)."""
    removed: dict[str, tuple[set[int], int]] = {}
    for plan in plans:
        for name, keep, groups in plan.gathers:
            per = int(by_name[name].dims[1])
            gone, _ = removed.setdefault(name, (set(), groups))
            gone.update(set(range(per * groups)) - set(keep.tolist()))
    for name, (gone, groups) in removed.items():
        weight = arrays[name] if name in arrays else numpy_helper.to_array(by_name[name])
        per, rows = int(by_name[name].dims[1]), weight.shape[0] // groups
        kept = [[c - b * per for c in range(b * per, (b + 1) * per) if c not in gone] for b in range(groups)]
        if len({len(k) for k in kept}) != 1:
            raise RuntimeError(f"grouped Conv weight {name!r}: its groups would keep unequal input channel counts")
        arrays[name] = np.concatenate([weight[b * rows : (b + 1) * rows][:, kept[b]] for b in range(groups)])
