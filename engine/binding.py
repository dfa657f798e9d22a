"""Binding a dataset to a model's inputs: which array feeds which input, and the casts that are allowed.

Rules: NPZ arrays named like the inputs bind by name; for a single-input model the one non-label array
binds; CSV/Parquet feature columns (all but the label) form one [N, F] input. Casts follow numpy's
`same_kind` rule (float64 -> float32 and int -> float are fine, float -> int is refused) and a value that
does not fit the target type is refused. `plan` decides from summaries alone (before a job is queued);
`bind` applies the plan to arrays (in the job).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from engine.core.errors import EngineError, ErrorCode
from engine.datasets import DatasetSummary
from engine.inspect import TensorSpec


class Binding(BaseModel):
    input: str
    dtype: str
    arrays: list[str]  # one array, or the feature columns stacked into [N, F]
    stacked: bool = False


def _np_dtype(elem_type: str) -> np.dtype:
    try:
        return np.dtype(elem_type)
    except TypeError:
        raise EngineError(ErrorCode.UNSUPPORTED, f"model inputs of type {elem_type} are not supported yet") from None


def _incompatible(detail: str) -> EngineError:
    return EngineError(ErrorCode.INCOMPATIBLE_DATA, detail)


def _check_fits(name: str, src: str, lo: float | None, hi: float | None, target: np.dtype, input_name: str) -> None:
    if not np.can_cast(np.dtype(src), target, casting="same_kind"):
        raise _incompatible(
            f"{name!r} is {src} but input {input_name!r} takes {target}: that cast could lose values "
            "(float to int is refused; convert the data first)"
        )
    if lo is None or hi is None or target.kind not in "iuf":
        return
    info = np.finfo(target) if target.kind == "f" else np.iinfo(target)
    if lo < float(info.min) or hi > float(info.max):
        raise _incompatible(f"{name!r} has values in [{lo:g}, {hi:g}] that overflow {target} (input {input_name!r})")


def _check_shape(name: str, shape: list[int], spec: TensorSpec) -> None:
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise _incompatible(
            f"{name!r} has shape {shape} but input {spec.name!r} has rank {len(spec.shape)} {spec.shape}"
        )
    for i, (have, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if i == 0 or not isinstance(want, int):
            continue  # the sample dimension is batched; symbolic dims take any size
        if have != want:
            raise _incompatible(f"{name!r} has shape {shape} but input {spec.name!r} needs {spec.shape} (dim {i})")


def plan(inputs: list[TensorSpec], summary: DatasetSummary) -> list[Binding]:
    if summary.kind != "samples":
        raise _incompatible("a training history holds no samples to feed a model")
    by_name = {a.name: a for a in summary.arrays}
    features = summary.features
    if not features:
        raise _incompatible("the dataset has only a label, no features")
    bindings: list[Binding] = []
    if summary.format in ("csv", "parquet"):
        if len(inputs) != 1:
            raise _incompatible(
                f"a {summary.format} dataset feeds one [N, F] input, but the model has {len(inputs)} inputs; "
                "use .npz with one array per input name"
            )
        spec = inputs[0]
        target = _np_dtype(spec.elem_type)
        for col in features:
            a = by_name[col]
            _check_fits(f"column {col}", a.dtype, a.min, a.max, target, spec.name)
        _check_shape(f"{len(features)} feature columns", [summary.sample_count, len(features)], spec)
        return [Binding(input=spec.name, dtype=str(target), arrays=features, stacked=True)]
    names = {s.name for s in inputs}
    if names <= set(features):
        chosen = {s.name: s.name for s in inputs}
    elif len(inputs) == 1 and len(features) == 1:
        chosen = {inputs[0].name: features[0]}
    else:
        missing = sorted(names - set(features))
        raise _incompatible(
            f"no array for model input(s) {missing}; the dataset has {features}. Name the arrays like the "
            "inputs, or use a single non-label array for a single-input model"
        )
    for spec in inputs:
        a = by_name[chosen[spec.name]]
        target = _np_dtype(spec.elem_type)
        _check_fits(f"array {a.name}", a.dtype, a.min, a.max, target, spec.name)
        _check_shape(f"array {a.name}", a.shape, spec)
        bindings.append(Binding(input=spec.name, dtype=str(target), arrays=[a.name]))
    return bindings


def bind(bindings: list[Binding], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model feeds for the whole dataset (the caller slices batches)."""
    feeds = {}
    for b in bindings:
        data = np.stack([arrays[c] for c in b.arrays], axis=1) if b.stacked else arrays[b.arrays[0]]
        feeds[b.input] = np.ascontiguousarray(data.astype(b.dtype, casting="same_kind", copy=False))
    return feeds
