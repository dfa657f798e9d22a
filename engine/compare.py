"""The comparison block every kind that produces a model shares: a candidate measured against the original.

Size; latency at several batch sizes and thread counts with runs of the two models interleaved (so machine
noise hits both alike); task metrics on the eval dataset with paired deltas and 95% intervals; output
fidelity per output (cosine, max abs error, SQNR, top-1 agreement for classifiers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from engine.errors import EngineError
from engine.evaluate import class_probabilities, classification_metrics, label_indices, regression_metrics
from engine.runtime import fixed_batch, make_session, run_batched

BOOTSTRAP_RESAMPLES = 200


class Percentiles(BaseModel):
    p50: float
    p90: float
    p99: float


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


class Fidelity(BaseModel):
    output: str
    cosine: float
    max_abs_error: float
    sqnr_db: float | None = Field(description="Signal-to-quantization-noise ratio; null when outputs are identical")
    top1_agreement: float | None = Field(description="Share of samples whose argmax agrees (classifier outputs)")
    non_finite_values: int = Field(description="inf/NaN values in the candidate's output (e.g. fp16 overflow)")


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


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def feeds_for(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same data in the session's input types (an fp16 model without float32 I/O takes float16)."""
    types = {i.name: _ORT_TYPES.get(i.type) for i in session.get_inputs()}
    return {k: v.astype(types[k]) if types.get(k) is not None and v.dtype != types[k] else v for k, v in feeds.items()}


def _percentiles(times: list[float]) -> Percentiles:
    a = np.asarray(times)
    return Percentiles(
        p50=float(np.percentile(a, 50)), p90=float(np.percentile(a, 90)), p99=float(np.percentile(a, 99))
    )


def interleaved_latency(
    original: str, candidate: str, feeds: dict[str, np.ndarray], *, threads: int, runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    a, b = make_session(original, threads), make_session(candidate, threads)
    fa, fb = feeds_for(a, feeds), feeds_for(b, feeds)
    for _ in range(warmup):
        a.run(None, fa)
        b.run(None, fb)
    ta, tb = [], []
    for i in range(runs):
        order = ((a, fa), (b, fb)) if i % 2 == 0 else ((b, fb), (a, fa))
        for sess, f in order:
            t0 = time.perf_counter()
            sess.run(None, f)
            (ta if sess is a else tb).append((time.perf_counter() - t0) * 1000.0)
    return ta, tb


def fidelity(name: str, ref: np.ndarray, out: np.ndarray) -> Fidelity:
    ref64, out64 = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    bad = int((~np.isfinite(out64)).sum())
    finite = np.isfinite(out64)
    r, o = ref64[finite], out64[finite]
    denom = float(np.linalg.norm(r) * np.linalg.norm(o))
    cosine = float(r @ o / denom) if denom > 0 else (1.0 if np.array_equal(r, o) else 0.0)
    noise = float(((r - o) ** 2).sum())
    sqnr = 10 * float(np.log10(float((r**2).sum()) / noise)) if noise > 0 and (r**2).sum() > 0 else None
    top1 = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean())
    return Fidelity(
        output=name,
        cosine=cosine,
        max_abs_error=float(np.abs(r - o).max()) if r.size else 0.0,
        sqnr_db=sqnr,
        top1_agreement=top1,
        non_finite_values=bad,
    )


def _task_metrics(task: str, out: np.ndarray, y: np.ndarray, summary: Any) -> Callable[[np.ndarray], dict]:
    n = len(y)
    if task == "classification":
        probs, _ = class_probabilities(out)
        yi = label_indices(y, summary, probs.shape[1])
        return lambda idx: classification_metrics(probs[idx], yi[idx])
    pred = out.astype(np.float64).reshape(n, -1)
    target = y.astype(np.float64).reshape(n, -1)
    return lambda idx: regression_metrics(pred[idx], target[idx])


def metric_comparison(
    task: str, out_a: np.ndarray, out_b: np.ndarray, y: np.ndarray, summary: Any
) -> tuple[dict[str, MetricComparison], str, dict[str, float]]:
    n = len(y)
    fa, fb = _task_metrics(task, out_a, y, summary), _task_metrics(task, out_b, y, summary)
    everything = np.arange(n)
    ma, mb = fa(everything), fb(everything)
    rng = np.random.default_rng(0)
    diffs: dict[str, list[float]] = {k: [] for k in ma}
    for _ in range(BOOTSTRAP_RESAMPLES):  # paired: the same resampled rows for both models
        idx = rng.integers(0, n, n)
        sa, sb = fa(idx), fb(idx)
        for k in diffs:
            if sa[k] is not None and sb[k] is not None:
                diffs[k].append(sb[k] - sa[k])
    out = {}
    for k in ma:
        delta = None
        if ma[k] is not None and mb[k] is not None:
            ci = [float(np.percentile(diffs[k], 2.5)), float(np.percentile(diffs[k], 97.5))] if diffs[k] else None
            delta = Delta(value=mb[k] - ma[k], ci95=ci)
        out[k] = MetricComparison(original=ma[k], candidate=mb[k], delta=delta)
    primary = "accuracy" if task == "classification" else "r2"
    drop = {}
    if ma.get(primary) is not None and mb.get(primary) is not None:
        drop["absolute"] = ma[primary] - mb[primary]
        drop["relative"] = drop["absolute"] / abs(ma[primary]) if ma[primary] else 0.0
    return out, primary, drop


def eval_data(
    inputs: Any, max_samples: int | None, synthetic: int, warnings: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None, Any, str | None]:
    """The data a comparison runs on: the `eval` dataset (its first `max_samples`), else `synthetic` random inputs
    from the model's signature with a warning. Returns (feeds, labels, label summary, task)."""
    if "eval" not in inputs.datasets:
        from engine.benchmark import synthetic_input

        rng = np.random.default_rng(0)
        feeds = {s.name: synthetic_input(s, synthetic, {}, rng) for s in inputs.model_info.inputs}
        warnings.append("no eval dataset: fidelity is measured on random inputs and no task metric is reported")
        return feeds, None, None, None
    feeds, labels = inputs.feeds("eval")
    summary = inputs.datasets["eval"].summary
    if max_samples is not None:
        feeds = {k: v[:max_samples] for k, v in feeds.items()}
        labels = labels[:max_samples] if labels is not None else None
    return feeds, labels, summary, summary.label.kind if summary.label else None


def check_same_signature(a: Any, b: Any, *, names: tuple[str, str]) -> None:
    """Two models (ModelInfo) must take the same inputs and give the same outputs: names, element types and the
    non-batch dimensions where both are fixed. EngineError `incompatible_model` names the side that differs."""

    def signature(specs: list[Any]) -> list[tuple]:
        return [(s.name, s.elem_type, [d if isinstance(d, int) else None for d in (s.shape or [])][1:]) for s in specs]

    for side in ("inputs", "outputs"):
        sa, sb = signature(getattr(a, side)), signature(getattr(b, side))
        if sa != sb:
            raise EngineError(
                "incompatible_model",
                f"the {names[1]}'s {side} {sb} do not match the {names[0]}'s {sa} "
                "(names, types and non-batch dimensions)",
            )


def compare_with_params(
    original: Path,
    candidate: Path,
    inputs: Any,
    evaluation: tuple[dict[str, np.ndarray], np.ndarray | None, Any, str | None],
    params: Any,
    progress: Callable[[float, str], None],
) -> Comparison:
    """`compare` as a kind that produces a model calls it: its params give the output, batch sizes, thread counts
    (default 1 and all, capped by the worker), runs and warm-ups; a model with a fixed batch is timed at it."""
    from engine.evaluate import pick_output

    info = inputs.model_info
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    threads = params.threads or sorted({1, inputs.max_threads})
    threads = [t for t in threads if t <= inputs.max_threads] or [1]
    feeds, labels, summary, task = evaluation
    return compare(
        str(original),
        str(candidate),
        outputs=[o.name for o in info.outputs],
        eval_feeds=feeds,
        labels=labels,
        label_summary=summary,
        task=task,
        prediction_output=pick_output(info, params.output),
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
    eval_feeds: dict[str, np.ndarray],
    labels: np.ndarray | None,
    label_summary: Any,
    task: str | None,
    prediction_output: str,
    batch_sizes: list[int],
    threads: list[int],
    runs: int,
    warmup: int,
    progress: Callable[[float, str], None],
    run_batch: int = 256,
) -> Comparison:
    n = next(iter(eval_feeds.values())).shape[0]
    progress(0.0, "running both models on the eval data")
    sa, sb = make_session(original, max(threads)), make_session(candidate, max(threads))
    fid, outs_a, outs_b = [], {}, {}
    for name in outputs:
        outs_a[name] = run_batched(sa, feeds_for(sa, eval_feeds), name, run_batch)
        outs_b[name] = run_batched(sb, feeds_for(sb, eval_feeds), name, run_batch)
        fid.append(fidelity(name, outs_a[name], outs_b[name]))
    metrics = primary = drop = None
    if labels is not None and task is not None:
        metrics, primary, drop = metric_comparison(
            task, outs_a[prediction_output], outs_b[prediction_output], labels, label_summary
        )
    pairs = []
    configs = [(t, b) for t in threads for b in batch_sizes]
    for i, (t, b) in enumerate(configs):
        progress((i + 1) / (len(configs) + 1), f"timing batch {b}, {t} thread(s), both models interleaved")
        idx = np.arange(b) % n
        feeds = {k: np.ascontiguousarray(v[idx]) for k, v in eval_feeds.items()}
        ta, tb = interleaved_latency(original, candidate, feeds, threads=t, runs=runs, warmup=warmup)
        pa, pb = _percentiles(ta), _percentiles(tb)
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
    size_a, size_b = Path(original).stat().st_size, Path(candidate).stat().st_size
    return Comparison(
        size_bytes=SizeComparison(original=size_a, candidate=size_b, ratio=size_b / size_a),
        latency_ms=pairs,
        metrics=metrics,
        primary_metric=primary,
        drop=drop,
        fidelity=fid,
        eval_samples=n,
    )
