"""The accuracy goal of every search (quantize auto, prune sensitivity, optimize): the primary metric (accuracy,
r2) may drop by at most `max_accuracy_drop`, relative to the original's value or in points; without labels, the
prediction output's cosine similarity to the original's must reach `min_output_cosine`. inf/NaN never meets it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EPS = 1e-12


@dataclass(frozen=True)
class Judgement:
    metric: float | None  # the goal's metric: the primary metric with labels, the cosine without
    drop: float | None  # of the primary metric, in the goal's terms (labels only)
    ok: bool


@dataclass(frozen=True)
class Goal:
    max_accuracy_drop: float
    drop_mode: Literal["relative", "absolute"] = "relative"
    min_output_cosine: float = 0.99
    cosine_too: bool = False  # with labels, require min_output_cosine as well

    def drop(self, original: float, candidate: float) -> float:
        absolute = original - candidate
        return absolute / abs(original) if self.drop_mode == "relative" and original else absolute

    def judge(
        self, *, original: float | None, metric: float | None, cosine: float | None, non_finite: int = 0, labeled: bool
    ) -> Judgement:
        """`original`/`metric`: the primary metric of the original and the candidate (labels); `cosine`: of the
        prediction output against the original's."""
        finite = non_finite == 0
        cosine_ok = cosine is not None and cosine >= self.min_output_cosine
        if not labeled:
            return Judgement(cosine, None, finite and cosine_ok)
        if original is None or metric is None:
            return Judgement(metric, None, False)
        drop = self.drop(original, metric)
        ok = finite and drop <= self.max_accuracy_drop + EPS and (cosine_ok or not self.cosine_too)
        return Judgement(metric, drop, ok)

    def shortfall(self, *, drop: float | None, cosine: float | None, labeled: bool) -> float:
        """How far from the goal, relative to its own limit (0 when met; inf when nothing was measured)."""
        if labeled:
            if drop is None:
                return float("inf")
            return max(0.0, drop - self.max_accuracy_drop) / max(self.max_accuracy_drop, 1e-3)
        if cosine is None:
            return float("inf")
        return max(0.0, self.min_output_cosine - cosine) / max(1 - self.min_output_cosine, 1e-3)

    def text(self, metric_name: str, labeled: bool) -> str:
        if labeled:
            text = f"{metric_name} on eval drops by at most {self.max_accuracy_drop:g} ({self.drop_mode})"
            if self.cosine_too:
                text += f" and output cosine similarity >= {self.min_output_cosine:g}"
            return text
        return f"output cosine similarity on eval >= {self.min_output_cosine:g} (eval has no labels)"
