"""Latency: one model's timed runs after warm-up, and two models timed interleaved (so machine noise hits both
alike). Times are wall-clock milliseconds of one InferenceSession.run call."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel

from engine.measure.data import feeds_for
from engine.runtime import make_session


class Percentiles(BaseModel):
    p50: float
    p90: float
    p99: float


def percentiles(times: list[float]) -> Percentiles:
    a = np.asarray(times)
    return Percentiles(
        p50=float(np.percentile(a, 50)), p90=float(np.percentile(a, 90)), p99=float(np.percentile(a, 99))
    )


def timed_runs(session: Any, feeds: dict[str, np.ndarray], warmup: int, runs: int, max_seconds: float) -> list[float]:
    """`runs` timed calls after `warmup` untimed ones; stops early after `max_seconds` (at least 5 runs)."""
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


def interleaved_latency(
    original: str, candidate: str, feeds: dict[str, np.ndarray], *, threads: int, runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Both models timed in turns (the order alternating), `runs` calls each after `warmup` each."""
    a, b = make_session(original, threads), make_session(candidate, threads)
    fa, fb = feeds_for(a, feeds), feeds_for(b, feeds)
    for _ in range(warmup):
        a.run(None, fa)
        b.run(None, fb)
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        order = ((a, fa, ta), (b, fb, tb)) if i % 2 == 0 else ((b, fb, tb), (a, fa, ta))
        for sess, f, times in order:
            t0 = time.perf_counter()
            sess.run(None, f)
            times.append((time.perf_counter() - t0) * 1000.0)
    return ta, tb
