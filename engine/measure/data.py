"""The data a measurement runs on: the eval dataset (its first samples) or random inputs from the model's
signature, and feeds cast to what a session takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs
from engine.datasets import DatasetSummary
from engine.inspect import TensorSpec
from engine.measure.metrics import task_of

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclass
class EvalData:
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    summary: DatasetSummary | None
    task: str | None

    @property
    def samples(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])

    @property
    def labeled(self) -> bool:
        return self.labels is not None and self.task is not None


def feeds_for(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same data in the session's input types (an fp16 model without float32 I/O takes float16)."""
    types = {i.name: _ORT_TYPES.get(i.type) for i in session.get_inputs()}
    return {k: v.astype(types[k]) if types.get(k) is not None and v.dtype != types[k] else v for k, v in feeds.items()}


def synthetic_shape(spec: TensorSpec, batch: int, dim_values: dict[str, int]) -> list[int]:
    """The shape of a synthetic input: the batch first, fixed dimensions as they are, named ones from dim_values."""
    if spec.shape is None:
        raise EngineError(ErrorCode.UNSUPPORTED, f"input {spec.name!r} has no known rank; benchmark it with a dataset")
    shape = []
    for i, d in enumerate(spec.shape):
        if i == 0 and not (isinstance(d, int) and d > 0):
            shape.append(batch)
        elif isinstance(d, int) and d > 0:
            shape.append(d)
        elif isinstance(d, str) and d in dim_values:
            shape.append(dim_values[d])
        else:
            raise EngineError(
                ErrorCode.MISSING_PARAM,
                f"input {spec.name!r} has symbolic dimension {d!r}: give its size in params.dim_values",
            )
    dtype = np.dtype(spec.elem_type)
    if dtype.kind not in "fiub":
        raise EngineError(ErrorCode.UNSUPPORTED, f"input {spec.name!r} of type {spec.elem_type} cannot be synthesized")
    return shape


def synthetic_input(spec: TensorSpec, batch: int, dim_values: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    shape = synthetic_shape(spec, batch, dim_values)
    dtype = np.dtype(spec.elem_type)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 2, shape).astype(dtype)


def eval_data(inputs: JobInputs, max_samples: int | None, synthetic: int, warnings: list[str]) -> EvalData:
    """The `eval` dataset (its first `max_samples`), else `synthetic` random inputs from the model's signature with
    a warning."""
    if "eval" not in inputs.datasets:
        rng = np.random.default_rng(0)
        feeds = {s.name: synthetic_input(s, synthetic, {}, rng) for s in inputs.model_info.inputs}
        warnings.append("no eval dataset: fidelity is measured on random inputs and no task metric is reported")
        return EvalData(feeds, None, None, None)
    feeds, labels = inputs.feeds("eval", max_samples)
    summary = inputs.datasets["eval"].summary
    if max_samples is not None:
        feeds = {k: v[:max_samples] for k, v in feeds.items()}
        labels = labels[:max_samples] if labels is not None else None
    return EvalData(feeds, labels, summary, task_of(summary))


def repeat_to(feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """A batch of `batch` samples, repeating the data when it has fewer."""
    n = next(iter(feeds.values())).shape[0]
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
