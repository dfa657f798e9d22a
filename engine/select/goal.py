"""The accuracy goal of every search (quantize auto, prune sensitivity, optimize): the primary metric (accuracy,
r2) may drop by at most `max_accuracy_drop`, relative to the original's value or in points; without labels, the
prediction output's cosine similarity to the original's (per sample, the mean, on what the user consumes:
engine.measure.fidelity) must reach `min_output_cosine`, or, when `min_top1_agreement` is given, the share of
samples whose top-1 class agrees with the original's must reach it (random-weight ResNets score cosine > 0.9999
at 84% top-1 agreement: cosine alone cannot rank classifiers). inf/NaN never meets it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EPS = 1e-12
QUALITY_TIE_SHARE = 0.1


@dataclass(frozen=True)
class Judgement:
    metric: float | None  # the goal's metric: the primary metric with labels, else top-1 agreement or the cosine
    drop: float | None  # of the primary metric, in the goal's terms (labels only)
    ok: bool


@dataclass(frozen=True)
class Goal:
    max_accuracy_drop: float
    drop_mode: Literal["relative", "absolute"] = "relative"
    min_output_cosine: float = 0.99
    cosine_too: bool = False  # with labels, require min_output_cosine as well
    min_top1_agreement: float | None = None  # required as well when given (labels or not)

    def metric_name(self, primary: str | None, labeled: bool) -> str:
        if labeled and primary:
            return primary
        return "top1_agreement" if self.min_top1_agreement is not None else "cosine"

    def drop(self, original: float, candidate: float) -> float:
        absolute = original - candidate
        return absolute / abs(original) if self.drop_mode == "relative" and original else absolute

    def judge(
        self,
        *,
        original: float | None,
        metric: float | None,
        cosine: float | None,
        non_finite: int = 0,
        labeled: bool,
        top1: float | None = None,
    ) -> Judgement:
        """`original`/`metric`: the primary metric of the original and the candidate (labels); `cosine`, `top1`:
        of the prediction output against the original's."""
        finite = non_finite == 0
        cosine_ok = cosine is not None and cosine >= self.min_output_cosine - EPS
        top1_ok = self.min_top1_agreement is None or (top1 is not None and top1 >= self.min_top1_agreement - EPS)
        if not labeled:
            if self.min_top1_agreement is not None:
                return Judgement(top1, None, finite and top1_ok and (cosine_ok or not self.cosine_too))
            return Judgement(cosine, None, finite and cosine_ok)
        if original is None or metric is None:
            return Judgement(metric, None, False)
        drop = self.drop(original, metric)
        ok = finite and drop <= self.max_accuracy_drop + EPS and (cosine_ok or not self.cosine_too) and top1_ok
        return Judgement(metric, drop, ok)

    def quality_tie(self, original: float | None, labeled: bool, share: float = QUALITY_TIE_SHARE) -> float:
        """Quality differences that count as equal in the choice (engine.select.trial.best): `share` of what the
        goal allows to lose (the drop allowed in the metric's units, or 1 - the cosine / top-1 threshold)."""
        if labeled:
            allowed = self.max_accuracy_drop * abs(original or 0.0) if self.drop_mode == "relative" else None
            return share * (allowed if allowed is not None else self.max_accuracy_drop)
        if self.min_top1_agreement is not None:
            return share * (1 - self.min_top1_agreement)
        return share * max(0.0, 1 - self.min_output_cosine)

    def shortfall(self, *, drop: float | None, cosine: float | None, labeled: bool, top1: float | None = None) -> float:
        """How far from the goal, relative to its own limit (0 when met; inf when nothing was measured)."""
        short = 0.0
        if self.min_top1_agreement is not None:
            if top1 is None:
                return float("inf")
            short += max(0.0, self.min_top1_agreement - top1) / max(1 - self.min_top1_agreement, 1e-3)
        if labeled:
            if drop is None:
                return float("inf")
            return short + max(0.0, drop - self.max_accuracy_drop) / max(self.max_accuracy_drop, 1e-3)
        if self.min_top1_agreement is not None and not self.cosine_too:
            return short
        if cosine is None:
            return float("inf")
        return short + max(0.0, self.min_output_cosine - cosine) / max(1 - self.min_output_cosine, 1e-3)

    def text(self, metric_name: str, labeled: bool, compared: str = "") -> str:
        on = f" ({compared})" if compared else ""
        top1 = f"top-1 agreement with the original >= {self.min_top1_agreement:g}" if self.min_top1_agreement else ""
        cosine = f"output cosine similarity{on} >= {self.min_output_cosine:g}"
        if labeled:
            text = f"{metric_name} on eval drops by at most {self.max_accuracy_drop:g} ({self.drop_mode})"
            if self.cosine_too:
                text += f" and {cosine}"
            return text + (f" and {top1}" if top1 else "")
        if top1:
            return f"{top1} on eval{f' and {cosine}' if self.cosine_too else ''} (eval has no labels)"
        return f"{cosine} on eval, mean over samples (eval has no labels)"
