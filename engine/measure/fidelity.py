"""Output fidelity of a candidate against a reference output: cosine, max abs error, SQNR, top-1 agreement."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field


class Fidelity(BaseModel):
    output: str
    cosine: float
    max_abs_error: float
    sqnr_db: float | None = Field(description="Signal-to-quantization-noise ratio; null when outputs are identical")
    top1_agreement: float | None = Field(description="Share of samples whose argmax agrees (classifier outputs)")
    non_finite_values: int = Field(description="inf/NaN values in the candidate's output (e.g. fp16 overflow)")


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
