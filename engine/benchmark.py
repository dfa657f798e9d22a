"""The `benchmark` job: latency percentiles and throughput per batch size and thread count, after warm-up."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from engine import binding
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.inspect import ModelInfo, TensorSpec
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import fixed_batch, make_session


class BenchmarkParams(StrictParams):
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1, max_length=8, description="Batch sizes to measure")
    threads: list[int] = Field(default=[1], min_length=1, max_length=4, description="intra-op thread counts")
    warmup_runs: int = Field(default=5, ge=0, le=1000, description="Untimed runs before each measurement")
    runs: int = Field(default=100, ge=5, le=100000, description="Timed runs per configuration (at most)")
    max_seconds_per_config: float = Field(
        default=10.0, gt=0, le=600, description="Stop a configuration early after this long (at least 5 runs)"
    )
    dim_values: dict[str, int] = Field(
        default_factory=dict, description="Sizes for symbolic dimensions other than the batch (e.g. sequence)"
    )

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if any(v < 1 or v > 65536 for v in values):
            raise ValueError("values must be between 1 and 65536")
        return sorted(set(values))


class Latency(BaseModel):
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float


class BenchmarkResult(BaseModel):
    batch_size: int
    threads: int
    warmup_runs: int
    runs: int
    latency_ms: Latency
    throughput_samples_per_s: float


class BenchmarkReport(ReportBase):
    kind: Literal["benchmark"] = "benchmark"
    input_source: Literal["dataset", "synthetic"]
    results: list[BenchmarkResult]
    note: str = "latency is the wall time of one InferenceSession.run call (ms) on the CPU execution provider"


def synthetic_input(spec: TensorSpec, batch: int, dim_values: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    if spec.shape is None:
        raise EngineError("unsupported", f"input {spec.name!r} has no known rank; benchmark it with a dataset")
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
                "missing_param", f"input {spec.name!r} has symbolic dimension {d!r}: give its size in params.dim_values"
            )
    dtype = np.dtype(spec.elem_type)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise EngineError("unsupported", f"input {spec.name!r} of type {spec.elem_type} cannot be synthesized")


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: BenchmarkParams) -> None:
    if "eval" in summaries:
        binding.plan(info.inputs, summaries["eval"])
        return
    rng = np.random.default_rng(0)
    for spec in info.inputs:
        synthetic_input(spec, 1, params.dim_values, rng)


def _feeds_for(inputs: JobInputs, params: BenchmarkParams) -> tuple[dict[str, np.ndarray] | None, str]:
    if "eval" not in inputs.datasets:
        return None, "synthetic"
    return inputs.feeds("eval")[0], "dataset"


def _batch_from(data: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    n = next(iter(data.values())).shape[0]
    idx = np.arange(batch) % n  # repeat samples when the dataset is smaller than the batch
    return {k: np.ascontiguousarray(v[idx]) for k, v in data.items()}


def measure(session, feeds: dict[str, np.ndarray], warmup: int, runs: int, max_seconds: float) -> list[float]:
    for _ in range(warmup):
        session.run(None, feeds)
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for i in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
        if i >= 4 and time.perf_counter() > deadline:
            break
    return times


def run(inputs: JobInputs, params: BenchmarkParams, progress: Progress) -> tuple[BenchmarkReport, list[ArtifactOut]]:
    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    data, source = _feeds_for(inputs, params)
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    batch_sizes = params.batch_sizes
    if forced is not None:
        if batch_sizes != [forced]:
            warnings.append(f"the model has a fixed batch of {forced}; only that batch size was measured")
        batch_sizes = [forced]
    threads_list = [t for t in params.threads if t <= inputs.max_threads]
    if len(threads_list) < len(params.threads):
        warnings.append(f"thread counts above the worker's limit of {inputs.max_threads} were skipped")
    if not threads_list:
        threads_list = [inputs.max_threads]
    if (machine.load_average_1m or 0) > 0.5 * machine.logical_cpus:
        warnings.append(
            f"the machine was busy when measuring started (load average {machine.load_average_1m}); "
            "latencies may be inflated"
        )
    rng = np.random.default_rng(0)
    configs = [(t, b) for t in threads_list for b in batch_sizes]
    results = []
    for i, (threads, batch) in enumerate(configs):
        progress(i / len(configs), f"measuring batch {batch}, {threads} thread(s)")
        session = make_session(inputs.model_path, threads)
        if data is not None:
            feeds = _batch_from(data, batch)
        else:
            feeds = {s.name: synthetic_input(s, batch, params.dim_values, rng) for s in info.inputs}
        try:
            times = measure(session, feeds, params.warmup_runs, params.runs, params.max_seconds_per_config)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError("runtime_error", f"the model failed at batch {batch}: {str(exc)[:500]}") from None
        arr = np.asarray(times)
        results.append(
            BenchmarkResult(
                batch_size=batch,
                threads=threads,
                warmup_runs=params.warmup_runs,
                runs=len(times),
                latency_ms=Latency(
                    p50=float(np.percentile(arr, 50)),
                    p90=float(np.percentile(arr, 90)),
                    p99=float(np.percentile(arr, 99)),
                    mean=float(arr.mean()),
                    min=float(arr.min()),
                    max=float(arr.max()),
                ),
                throughput_samples_per_s=round(batch * len(times) / (arr.sum() / 1000.0), 2),
            )
        )
        if len(times) < params.runs:
            warnings.append(
                f"batch {batch}, {threads} thread(s): stopped after {len(times)} of {params.runs} runs "
                f"(max_seconds_per_config {params.max_seconds_per_config:g})"
            )
    if results and min(r.latency_ms.p50 for r in results) < 0.05:
        warnings.append("calls under 50 us mostly measure call overhead; compare at larger batch sizes")
    machine.load_average_1m_after = load_average()
    return BenchmarkReport(warnings=warnings, machine=machine, input_source=source, results=results), []


KIND = JobKind(
    name="benchmark",
    params=BenchmarkParams,
    report=BenchmarkReport,
    run=run,
    validate=validate,
    roles=("eval",),
    required=(),
    queue="measure",
    threads=lambda p: max(p.threads),
)
