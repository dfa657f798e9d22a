"""Output fidelity of a candidate against a reference output, measured on what the user consumes.

What is compared (a FidelitySpec): one output, pooled the way its consumer pools it (`mean` over a mask input such
as `attention_mask`, `cls`: the first position, `none`: the whole output per sample). Padding positions never
count: with a mask, `none` compares only the unmasked positions. Defaults come from the model's signature (an
integer mask input with a [batch, seq, hidden] output is an encoder: mean pooling over the mask).

Reported per output: the cosine of the whole output (all samples flattened), per-sample cosine (mean and minimum),
max abs error, SQNR, and for classifier-like outputs ([batch, classes]) top-1 and top-5 agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.inspect import ModelInfo

Pooling = Literal["none", "mean", "cls"]
MASK_HINTS = ("attention_mask", "input_mask", "mask")


class Fidelity(BaseModel):
    output: str
    compared: str = Field(default="the whole output", description="What was compared: the output as pooled")
    cosine: float = Field(description="Cosine similarity of the whole output, every sample flattened into one vector")
    cosine_mean: float | None = Field(default=None, description="Per-sample cosine similarity, mean over samples")
    cosine_min: float | None = Field(default=None, description="Per-sample cosine similarity, the worst sample")
    max_abs_error: float
    sqnr_db: float | None = Field(description="Signal-to-quantization-noise ratio; null when outputs are identical")
    top1_agreement: float | None = Field(description="Share of samples whose argmax agrees (classifier outputs)")
    top5_agreement: float | None = Field(
        default=None, description="Share of samples whose original top-1 class is in the candidate's top 5"
    )
    non_finite_values: int = Field(description="inf/NaN values in the candidate's output (e.g. fp16 overflow)")


@dataclass(frozen=True)
class FidelitySpec:
    """What the goal compares: `output`, pooled by `pooling` over `mask_input` (an input of the model)."""

    output: str
    pooling: Pooling = "none"
    mask_input: str | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.pooling == "mean":
            return f"{self.output}, mean-pooled over {self.mask_input}"
        if self.pooling == "cls":
            return f"{self.output}, first position (CLS)"
        if self.mask_input:
            return f"{self.output}, positions where {self.mask_input} is set"
        return f"{self.output}, whole output"

    def consumed(self, out: np.ndarray, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The output as its consumer sees it, one row per sample ([n, ...]), and the per-position weights of the
        rows when padding positions must be left out of `none` ([n, seq] or None)."""
        mask = None
        if self.mask_input is not None and out.ndim >= 3:
            m = feeds[self.mask_input]
            mask = (m.reshape(m.shape[0], -1)[:, : out.shape[1]] != 0).astype(np.float64)
        if self.pooling == "cls":
            return out[:, 0], None
        if self.pooling == "mean":
            if mask is None:
                return out.reshape(out.shape[0], out.shape[1], -1).mean(axis=1), None
            w = mask.reshape(*mask.shape, *([1] * (out.ndim - 2)))
            return (out * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0), None
        return out, mask


def default_spec(info: ModelInfo, output: str, pooling: str = "auto", mask_input: str | None = None) -> FidelitySpec:
    """The spec for `output`: the pooling and mask given, else picked from the signature (see the module doc)."""
    spec = next(o for o in info.outputs if o.name == output)
    rank = len(spec.shape) if spec.shape is not None else None
    if mask_input is not None and mask_input not in [i.name for i in info.inputs]:
        raise EngineError(
            ErrorCode.INCOMPATIBLE_MODEL,
            f"fidelity mask input {mask_input!r} is not an input of the model: {[i.name for i in info.inputs]}",
        )
    if mask_input is None:
        ints = [i for i in info.inputs if i.elem_type.startswith(("int", "uint", "bool")) and len(i.shape or []) == 2]
        mask_input = next((i.name for h in MASK_HINTS for i in ints if h in i.name.lower()), None)
    if pooling in ("mean", "cls") and rank is not None and rank < 3:
        raise EngineError(
            ErrorCode.INCOMPATIBLE_MODEL,
            f"pooling {pooling!r} needs a [batch, sequence, ...] output; {output!r} has rank {rank}",
        )
    if pooling != "auto":
        p: Pooling = pooling  # type: ignore[assignment]  # checked by the params' Literal
        return FidelitySpec(output, p, mask_input if rank != 2 else None, "as requested")
    if mask_input is not None and rank == 3:
        return FidelitySpec(
            output, "mean", mask_input, f"a mask input ({mask_input}) and a [batch, seq, hidden] output: an encoder"
        )
    return FidelitySpec(output, "none", None, "the output as it is")


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)


def fidelity(
    name: str,
    ref: np.ndarray,
    out: np.ndarray,
    mask: np.ndarray | None = None,
    compared: str = "",
    classifier: bool | None = None,
) -> Fidelity:
    """`ref` and `out` are [n, ...] (one row per sample); `mask` [n, seq] leaves padding positions out;
    `classifier`: top-1/top-5 agreement are reported (default: for [n, classes] outputs)."""
    if mask is not None:  # padding positions zeroed in both: they add nothing to any sum below
        w = mask.reshape(*mask.shape, *([1] * (ref.ndim - 2)))
        ref, out = np.where(w > 0, ref, 0), np.where(w > 0, out, 0)
    ref64, out64 = _rows(ref.astype(np.float64)), _rows(out.astype(np.float64))
    bad = int((~np.isfinite(out64)).sum())
    finite = np.isfinite(out64)
    r, o = ref64[finite], out64[finite]
    denom = float(np.linalg.norm(r) * np.linalg.norm(o))
    cosine = float(r @ o / denom) if denom > 0 else (1.0 if np.array_equal(r, o) else 0.0)
    noise = float(((r - o) ** 2).sum())
    sqnr = 10 * float(np.log10(float((r**2).sum()) / noise)) if noise > 0 and (r**2).sum() > 0 else None
    per = _per_sample_cosine(ref64, out64)
    top1 = top5 = None
    if (ref.ndim == 2 if classifier is None else classifier) and ref.ndim == 2 and ref.shape[1] > 1:
        truth = ref.argmax(axis=1)
        top1 = float((truth == out.argmax(axis=1)).mean())
        k = min(5, ref.shape[1])
        top = np.argpartition(-np.nan_to_num(out.astype(np.float64), nan=-np.inf), k - 1, axis=1)[:, :k]
        top5 = float((top == truth[:, None]).any(axis=1).mean())
    return Fidelity(
        output=name,
        compared=compared or "the whole output",
        cosine=cosine,
        cosine_mean=float(per.mean()) if per.size else None,
        cosine_min=float(per.min()) if per.size else None,
        max_abs_error=float(np.abs(r - o).max()) if r.size else 0.0,
        sqnr_db=sqnr,
        top1_agreement=top1,
        top5_agreement=top5,
        non_finite_values=bad,
    )


def _per_sample_cosine(r: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Cosine of each row; a row with non-finite values scores 0, two all-zero rows 1 (identical)."""
    finite = np.isfinite(o).all(axis=1)
    o = np.where(np.isfinite(o), o, 0.0)
    nr, no = np.linalg.norm(r, axis=1), np.linalg.norm(o, axis=1)
    dot = (r * o).sum(axis=1)
    same = (nr == 0) & (no == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(nr * no > 0, dot / (nr * no), np.where(same, 1.0, 0.0))
    return np.where(finite, cos, 0.0)


def measure(spec: FidelitySpec, ref: np.ndarray, out: np.ndarray, feeds: dict[str, np.ndarray]) -> Fidelity:
    """Fidelity of `out` against `ref` on what `spec` says the user consumes."""
    r, mask = spec.consumed(ref, feeds)
    o, _ = spec.consumed(out, feeds)
    return fidelity(spec.output, r, o, mask, spec.describe(), classifier=ref.ndim == 2)
