"""The comparison block every kind that produces a model shares: a candidate measured against the original.

Size; latency at several batch sizes and thread counts with runs of the two models interleaved (so machine
noise hits both alike); task metrics on the eval dataset with paired deltas and 95% intervals; output
fidelity per output (cosine, max abs error, SQNR, top-1 agreement for classifiers), the prediction output's on
what the user consumes (its FidelitySpec: pooled over a mask input for encoders, padding left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

from engine.bundle import model_bytes
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs, pick_output
from engine.core.kind import Progress
from engine.inspect import ModelInfo, TensorSpec
from engine.measure.data import EvalData, feeds_for, repeat_to
from engine.measure.fidelity import Fidelity, FidelitySpec, default_spec, fidelity, measure
from engine.measure.latency import Percentiles, interleaved_latency, percentiles
from engine.measure.metrics import PRIMARY, Predictions
from engine.runtime import fixed_batch, make_session, run_batched

BOOTSTRAP_RESAMPLES = 200


class LatencyPair(BaseModel):
    batch_size: int
    threads: int
    runs: int = Field(description="Timed runs of each model, interleaved")
    original_ms: Percentiles
    candidate_ms: Percentiles
    speedup_p50: float = Field(description="original p50 / candidate p50 (above 1: the candidate is faster)")
    throughput_samples_per_s: dict[str, float]


class Delta(BaseModel):
    value: float
    ci95: list[float] | None = Field(description="Paired bootstrap 95% interval of the difference")


class MetricComparison(BaseModel):
    original: float | None
    candidate: float | None
    delta: Delta | None = Field(description="candidate - original")


class SizeComparison(BaseModel):
    original: int
    candidate: int
    ratio: float = Field(description="candidate / original")


class Comparison(BaseModel):
    size_bytes: SizeComparison
    latency_ms: list[LatencyPair]
    metrics: dict[str, MetricComparison] | None = Field(description="Task metrics on the eval dataset, if labeled")
    primary_metric: str | None = Field(default=None, description="accuracy (classification) or r2 (regression)")
    drop: dict[str, float] | None = Field(
        default=None, description="Drop of the primary metric: absolute (original - candidate) and relative"
    )
    fidelity: list[Fidelity]
    eval_samples: int = Field(description="Samples the metrics and fidelity were computed on")


class TimingParams(Protocol):
    """The params a kind's comparison is timed with (every kind that produces a model has them)."""

    @property
    def output(self) -> str | None: ...
    @property
    def batch_sizes(self) -> list[int]: ...
    @property
    def threads(self) -> list[int] | None: ...
    @property
    def runs(self) -> int: ...
    @property
    def warmup_runs(self) -> int: ...


def metric_comparison(
    task: str, out_a: np.ndarray, out_b: np.ndarray, evaluation: EvalData
) -> tuple[dict[str, MetricComparison], str, dict[str, float]]:
    """Both models' task metrics, with paired bootstrap intervals of each difference, and the primary's drop."""
    assert evaluation.labels is not None
    n = len(evaluation.labels)
    pa = Predictions(task, out_a, evaluation.labels, evaluation.summary)
    pb = Predictions(task, out_b, evaluation.labels, evaluation.summary)
    ma, mb = pa.metrics(), pb.metrics()
    rng = np.random.default_rng(0)
    diffs: dict[str, list[float]] = {k: [] for k in ma}
    for _ in range(BOOTSTRAP_RESAMPLES):  # paired: the same resampled rows for both models
        idx = rng.integers(0, n, n)
        sa, sb = pa.metrics(idx), pb.metrics(idx)
        for k in diffs:
            va, vb = sa[k], sb[k]
            if va is not None and vb is not None:
                diffs[k].append(vb - va)
    out = {}
    for k, va in ma.items():
        vb = mb[k]
        delta = None
        if va is not None and vb is not None:
            ci = [float(np.percentile(diffs[k], 2.5)), float(np.percentile(diffs[k], 97.5))] if diffs[k] else None
            delta = Delta(value=vb - va, ci95=ci)
        out[k] = MetricComparison(original=va, candidate=vb, delta=delta)
    primary = PRIMARY[task]
    drop = {}
    va, vb = ma.get(primary), mb.get(primary)
    if va is not None and vb is not None:
        drop["absolute"] = va - vb
        drop["relative"] = drop["absolute"] / abs(va) if va else 0.0
    return out, primary, drop


def check_same_signature(a: ModelInfo, b: ModelInfo, *, names: tuple[str, str]) -> None:
    """Two models must take the same inputs and give the same outputs: names, element types and the non-batch
    dimensions where both are fixed. EngineError `incompatible_model` names the side that differs."""

    def signature(specs: list[TensorSpec]) -> list[tuple[str, str, list[int | None]]]:
        return [(s.name, s.elem_type, [d if isinstance(d, int) else None for d in (s.shape or [])][1:]) for s in specs]

    for side in ("inputs", "outputs"):
        sa, sb = signature(getattr(a, side)), signature(getattr(b, side))
        if sa != sb:
            raise EngineError(
                ErrorCode.INCOMPATIBLE_MODEL,
                f"the {names[1]}'s {side} {sb} do not match the {names[0]}'s {sa} "
                "(names, types and non-batch dimensions)",
            )


def compare_with_params(
    original: Path,
    candidate: Path,
    inputs: JobInputs,
    evaluation: EvalData,
    params: TimingParams,
    progress: Progress,
    spec: FidelitySpec | None = None,
) -> Comparison:
    """`compare` as a kind that produces a model calls it: its params give the output, batch sizes, thread counts
    (default 1 and all, capped by the worker), runs and warm-ups; a model with a fixed batch is timed at it. `spec`:
    how the prediction output is consumed (default: from the signature, engine.measure.fidelity.default_spec)."""
    info = inputs.model_info
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    threads = params.threads or sorted({1, inputs.max_threads})
    threads = [t for t in threads if t <= inputs.max_threads] or [1]
    predicted = pick_output(info, params.output)
    return compare(
        str(original),
        str(candidate),
        outputs=[o.name for o in info.outputs],
        evaluation=evaluation,
        prediction_output=predicted,
        spec=spec or default_spec(info, predicted),
        batch_sizes=[forced] if forced else params.batch_sizes,
        threads=threads,
        runs=params.runs,
        warmup=params.warmup_runs,
        run_batch=forced or 256,
        progress=progress,
    )


def compare(
    original: str,
    candidate: str,
    *,
    outputs: list[str],
    evaluation: EvalData,
    prediction_output: str,
    batch_sizes: list[int],
    threads: list[int],
    runs: int,
    warmup: int,
    progress: Progress,
    run_batch: int = 256,
    spec: FidelitySpec | None = None,
) -> Comparison:
    eval_feeds = evaluation.feeds
    n = evaluation.samples
    progress(0.0, "running both models on the eval data")
    sa, sb = make_session(original, max(threads)), make_session(candidate, max(threads))
    fid, outs_a, outs_b = [], {}, {}
    for name in outputs:
        outs_a[name] = run_batched(sa, feeds_for(sa, eval_feeds), name, run_batch)
        outs_b[name] = run_batched(sb, feeds_for(sb, eval_feeds), name, run_batch)
        if spec is not None and name == spec.output:
            fid.append(measure(spec, outs_a[name], outs_b[name], eval_feeds))
        else:
            fid.append(fidelity(name, outs_a[name], outs_b[name]))
    metrics = primary = drop = None
    if evaluation.labeled and evaluation.task is not None:
        metrics, primary, drop = metric_comparison(
            evaluation.task, outs_a[prediction_output], outs_b[prediction_output], evaluation
        )
    pairs = []
    configs = [(t, b) for t in threads for b in batch_sizes]
    for i, (t, b) in enumerate(configs):
        progress((i + 1) / (len(configs) + 1), f"timing batch {b}, {t} thread(s), both models interleaved")
        ta, tb = interleaved_latency(original, candidate, repeat_to(eval_feeds, b), threads=t, runs=runs, warmup=warmup)
        pa, pb = percentiles(ta), percentiles(tb)
        pairs.append(
            LatencyPair(
                batch_size=b,
                threads=t,
                runs=runs,
                original_ms=pa,
                candidate_ms=pb,
                speedup_p50=pa.p50 / pb.p50 if pb.p50 > 0 else 0.0,
                throughput_samples_per_s={
                    "original": b * 1000 / float(np.mean(ta)),
                    "candidate": b * 1000 / float(np.mean(tb)),
                },
            )
        )
    size_a, size_b = model_bytes(original), model_bytes(candidate)  # external data files included
    return Comparison(
        size_bytes=SizeComparison(original=size_a, candidate=size_b, ratio=size_b / size_a),
        latency_ms=pairs,
        metrics=metrics,
        primary_metric=primary,
        drop=drop,
        fidelity=fid,
        eval_samples=n,
    )
