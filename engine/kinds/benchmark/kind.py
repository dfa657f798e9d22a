"""The `benchmark` job: latency percentiles and throughput per batch size and thread count, after warm-up."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import BatchSize, Kind, Outcome, ReportBase, RunContext, StrictParams, ThreadCount
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.measure.data import repeat_to, synthetic_input, synthetic_shape
from engine.measure.latency import timed_runs
from engine.runtime import fixed_batch, make_session

# The largest synthetic input built for one call (elements; 2^28 float32 = 1 GiB): checked at submit by arithmetic
# on the shapes, so a request for a gigantic tensor is refused before anything is allocated anywhere.
MAX_SYNTHETIC_ELEMENTS = 1 << 28


class BenchmarkParams(StrictParams):
    batch_sizes: list[BatchSize] = Field(
        default=[1, 32], min_length=1, max_length=8, description="Batch sizes to measure"
    )
    threads: list[ThreadCount] = Field(default=[1], min_length=1, max_length=4, description="intra-op thread counts")
    warmup_runs: int = Field(default=5, ge=0, le=1000, description="Untimed runs before each measurement")
    runs: int = Field(default=100, ge=5, le=100000, description="Timed runs per configuration (at most)")
    max_seconds_per_config: float = Field(
        default=10.0, gt=0, le=600, description="Stop a configuration early after this long (at least 5 runs)"
    )
    dim_values: dict[str, Annotated[int, Field(ge=1, le=1 << 31)]] = Field(
        default_factory=dict, description="Sizes for symbolic dimensions other than the batch (e.g. sequence)"
    )

    @field_validator("batch_sizes", "threads")
    @classmethod
    def _sorted(cls, values: list[int]) -> list[int]:
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


def _latency(times: list[float]) -> Latency:
    arr = np.asarray(times)
    return Latency(
        p50=float(np.percentile(arr, 50)),
        p90=float(np.percentile(arr, 90)),
        p99=float(np.percentile(arr, 99)),
        mean=float(arr.mean()),
        min=float(arr.min()),
        max=float(arr.max()),
    )


class Benchmark(Kind[BenchmarkParams, BenchmarkReport]):
    name = "benchmark"
    external_data = True  # ONNX Runtime sessions from the path: the data files are read beside the graph
    Params = BenchmarkParams
    Report = BenchmarkReport
    roles = ("eval",)
    queue = "measure"

    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        from engine.kinds.benchmark.charts import charts

        return charts(report)

    def threads(self, params: BenchmarkParams) -> int:
        return max(params.threads)

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: BenchmarkParams) -> None:
        if "eval" in summaries:
            binding.plan(info.inputs, summaries["eval"])
            return
        batch = max(params.batch_sizes)
        for spec in info.inputs:  # arithmetic on the shapes only: nothing is allocated at submit
            elements = math.prod(synthetic_shape(spec, batch, params.dim_values))
            if elements > MAX_SYNTHETIC_ELEMENTS:
                raise EngineError(
                    ErrorCode.INPUT_TOO_LARGE,
                    f"input {spec.name!r} would have {elements:,} elements at batch {batch} "
                    f"(at most {MAX_SYNTHETIC_ELEMENTS:,}): use smaller dim_values or batch sizes",
                )

    def run(self, ctx: RunContext, params: BenchmarkParams) -> Outcome[BenchmarkReport]:
        inputs, warnings, machine = ctx.inputs, ctx.warnings, ctx.machine
        info = inputs.model_info
        data = inputs.feeds("eval")[0] if "eval" in inputs.datasets else None
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
            ctx.progress(i / len(configs), f"measuring batch {batch}, {threads} thread(s)")
            session = make_session(inputs.model_path, threads)
            if data is not None:
                feeds = repeat_to(data, batch)
            else:
                feeds = {s.name: synthetic_input(s, batch, params.dim_values, rng) for s in info.inputs}
            try:
                times = timed_runs(session, feeds, params.warmup_runs, params.runs, params.max_seconds_per_config)
            except Exception as exc:  # ONNX Runtime failing on the user's model at this batch: a known condition
                raise EngineError(
                    ErrorCode.RUNTIME_ERROR, f"the model failed at batch {batch}: {str(exc)[:500]}"
                ) from None
            results.append(
                BenchmarkResult(
                    batch_size=batch,
                    threads=threads,
                    warmup_runs=params.warmup_runs,
                    runs=len(times),
                    latency_ms=_latency(times),
                    throughput_samples_per_s=round(batch * len(times) / (sum(times) / 1000.0), 2),
                )
            )
            if len(times) < params.runs:
                warnings.append(
                    f"batch {batch}, {threads} thread(s): stopped after {len(times)} of {params.runs} runs "
                    f"(max_seconds_per_config {params.max_seconds_per_config:g})"
                )
        if results and min(r.latency_ms.p50 for r in results) < 0.05:
            warnings.append("calls under 50 us mostly measure call overhead; compare at larger batch sizes")
        source: Literal["dataset", "synthetic"] = "dataset" if data is not None else "synthetic"
        return Outcome(BenchmarkReport(input_source=source, results=results))


KIND = Benchmark()
