"""ONNX Runtime sessions with explicit thread counts, and batched runs over bound feeds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from engine.core.errors import EngineError, ErrorCode


def session_options(threads: int = 1, *, optimize: bool = True, prepack: bool = True) -> Any:
    """Explicit thread counts always; optimizations and weight prepacking can be turned off (a load check)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def make_session(model_path: str, threads: int = 1) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model_path, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EngineError(ErrorCode.INVALID_MODEL, f"ONNX Runtime cannot load the model: {str(exc)[:500]}") from None


def batches(feeds: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    n = next(iter(feeds.values())).shape[0]
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in feeds.items()}


def as_array(value: Any) -> np.ndarray:
    """An output as an array: a ZipMap's list of {class: probability} dicts becomes [samples, classes], the classes
    in sorted order (scikit-learn's classes_ order, which skl2onnx keeps); tensors pass through."""
    if isinstance(value, list):
        if not value:
            return np.zeros((0, 0), np.float32)
        if not isinstance(value[0], dict):
            raise EngineError(ErrorCode.UNSUPPORTED, "the model returns a sequence that is not of class probabilities")
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], np.float32).reshape(len(value), len(keys))
    return np.asarray(value)


def run_batched(
    session: Any,
    feeds: dict[str, np.ndarray],
    output: str,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    n = next(iter(feeds.values())).shape[0]
    outs = []
    for i, batch in enumerate(batches(feeds, batch_size)):
        try:
            value = session.run([output], batch)[0]
        except Exception as exc:
            raise EngineError(ErrorCode.RUNTIME_ERROR, f"the model failed on a batch: {str(exc)[:500]}") from None
        outs.append(as_array(value))  # outside the try: its `unsupported` is not a runtime failure
        if progress is not None:
            progress(min(1.0, (i + 1) * batch_size / n))
    return np.concatenate(outs, axis=0)


def fixed_batch(input_shape: list[int | str | None] | None) -> int | None:
    """The batch size a model insists on (a fixed first dimension), or None."""
    if input_shape and isinstance(input_shape[0], int) and input_shape[0] > 0:
        return input_shape[0]
    return None
