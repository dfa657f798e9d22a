"""One measured candidate of a search, the Pareto front over (quality, latency, size) with one tie rule, and the
one choice rule. quantize auto, prune's sensitivity combination and optimize extend Trial with their own fields.

Ties: latencies of the same model measured a minute apart differ by 10-30% on a shared 2-vCPU machine
(BENCHMARKS.md), sizes barely vary; values within TIES of each other count as equal, in the front (epsilon
dominance) and in the choice (the better metric breaks the tie).

Feasibility first (constrained dominance): a trial that meets the goal dominates one that does not, whatever their
axes, so the front's feasible part is the front of the trials that meet the goal, and the choice (`choose`) is
always on it. With the original taking part, a trial must be measurably better than the original on the objective
(beyond the tie band) to be handed back; otherwise the original is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

Objective = Literal["latency", "size"]
TIES: dict[str, float] = {"latency": 0.10, "size": 0.02}
INF = float("inf")


class Trial(BaseModel):
    index: int
    name: str
    status: Literal["planned", "measured", "failed", "skipped"] = "planned"
    metric: float | None = Field(default=None, description="The goal's metric on eval (accuracy, r2, or cosine)")
    cosine: float | None = Field(default=None, description="Cosine similarity of the prediction output")
    speedup: float | None = Field(default=None, description="original p50 / this p50, timed interleaved")
    size_bytes: int | None = None
    size_ratio: float | None = None
    non_finite_values: int = Field(default=0, description="inf/NaN values in the prediction output")
    pareto: bool = Field(default=False, description="Not dominated in (metric, latency, size) by another trial")
    seconds: float | None = Field(default=None, description="Wall time of this trial")

    # -- the axes every rule reads ------------------------------------------------------------------------
    @property
    def quality(self) -> float:
        """Higher is better: the goal's metric, else the cosine."""
        value = self.metric if self.metric is not None else self.cosine
        return value if value is not None else -INF

    @property
    def latency(self) -> float:
        """Relative latency (1 / speed-up), lower is better."""
        return 1.0 / self.speedup if self.speedup else INF

    @property
    def size(self) -> float:
        return float(self.size_bytes) if self.size_bytes else INF

    def axis(self, objective: str) -> float:
        return self.latency if objective == "latency" else self.size

    @property
    def measured(self) -> bool:
        return self.status == "measured"


T = TypeVar("T", bound=Trial)


def _within(a: float, b: float, tie: float) -> bool:
    """a is no worse than b on a lower-is-better axis, counting values within `tie` of b as equal."""
    return a <= b * (1 + tie)


def improves(a: Trial, b: Trial, axis: str) -> bool:
    """a is clearly better than b on `axis` (lower is better), beyond the axis' tie band."""
    return a.axis(axis) * (1 + TIES[axis]) < b.axis(axis)


def dominates(a: Trial, b: Trial) -> bool:
    """a is no worse than b on every axis and clearly better on one (latency and size within TIES are equal)."""
    no_worse = a.quality >= b.quality and all(_within(a.axis(x), b.axis(x), TIES[x]) for x in TIES)
    better = a.quality > b.quality or any(improves(a, b, x) for x in TIES)
    return no_worse and better


def front(pool: Sequence[T]) -> list[T]:
    """The trials of `pool` that no other trial of `pool` dominates."""
    return [t for t in pool if not any(dominates(o, t) for o in pool if o is not t)]


def mark_pareto(trials: Sequence[Trial], feasible: Callable[[Trial], bool] = lambda t: True) -> None:
    """Set `pareto` on the measured trials with finite outputs that no other such trial dominates, feasibility
    first: while any trial is `feasible` (meets the goal), only feasible trials are on the front."""
    pool = [t for t in trials if t.measured and not t.non_finite_values]
    ok = [t for t in pool if feasible(t)]
    on = front(ok or pool)
    for t in trials:
        t.pareto = any(p is t for p in on)


def choose(
    feasible: Sequence[T], objective: Objective, original: Trial | None = None, quality_tie: float = 0.0
) -> T | None:
    """The trial to hand back among those that meet the goal: on their front, clearly better than `original` on
    the objective when the original takes part (None: keep the original), then `best`."""
    pool = front(feasible)
    if original is not None:
        pool = [t for t in pool if improves(t, original, objective)]
    return best(pool, objective, quality_tie) if pool else None


def best(pool: Sequence[T], objective: Objective, quality_tie: float = 0.0) -> T:
    """The best objective, ties settled axis by axis, each with its own band: among the trials within the tie band of
    the best objective (differences there are noise), the best quality (qualities within `quality_tie` of it count
    as equal: a tenth of what the goal allows to lose buys nothing the user can see), then among those the best
    other axis within its band (of two equally fast encoders meeting the goal, the one at a quarter of the size),
    then the best quality, then the lowest index (candidates come best bets first; 0 is the original where it takes
    part: a change that gains nothing measurable loses to it)."""
    top = min(t.axis(objective) for t in pool)
    near = [t for t in pool if _within(t.axis(objective), top, TIES[objective])]
    q = max(t.quality for t in near)
    near = [t for t in near if t.quality >= q - quality_tie]
    other = "size" if objective == "latency" else "latency"
    low = min(t.axis(other) for t in near)
    near = [t for t in near if _within(t.axis(other), low, TIES[other])]
    return min(near, key=lambda t: (-t.quality, -(t.cosine or 0.0), t.index))
