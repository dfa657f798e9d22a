"""How much a group matters and which channels go: per-unit weight norms, a group's score per channel from its
members', and the selection (the lowest-scoring channels, whole heads where asked; under the equal-count
constraints of grouped convolutions, an exact small integer program)."""

from __future__ import annotations

import numpy as np


def importance(weights: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """L1 or L2 norm of each output unit's weights (the unit's slice along `axis`)."""
    w = weights.astype(np.float64)
    w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w**2).sum(axis=1))


def aligned(keep: np.ndarray, channels: int, blocks: int) -> bool:
    """`keep` (sorted channel indices of `channels`) keeps the same relative channels in each of `blocks` blocks."""
    if blocks <= 1:
        return True
    if channels % blocks:
        return False
    size = channels // blocks
    first = keep[keep < size]
    return len(keep) == blocks * len(first) and np.array_equal(
        keep, (np.arange(blocks)[:, None] * size + first[None, :]).ravel()
    )


def select(scores: np.ndarray, ratio: float, unit: int = 1) -> np.ndarray | None:
    """The kept channels: the lowest-scoring `ratio` go, at least one stays; with `unit`, whole runs of `unit`
    channels (an attention head's head_dim) go or stay together, scored by their sum. None when the ratio removes
    none."""
    units = scores.reshape(-1, unit).sum(axis=1)
    remove = min(int(np.floor(ratio * len(units))), len(units) - 1)
    if remove <= 0:
        return None
    kept_units = np.sort(np.argsort(units, kind="stable")[remove:])
    return (kept_units[:, None] * unit + np.arange(unit)[None, :]).ravel()


def class_importance(scores: dict[str, np.ndarray], class_of: dict[str, np.ndarray], n: int) -> np.ndarray:
    """One score per channel class of a group: each member's scores divided by their mean (a wide layer's large
    norms do not drown a narrow one's), averaged over the member channels of the class."""
    total, count = np.zeros(n), np.zeros(n)
    for w, s in scores.items():
        np.add.at(total, class_of[w], s / (s.mean() or 1.0))
        np.add.at(count, class_of[w], 1.0)
    return total / np.maximum(count, 1.0)


def select_equal_counts(
    scores: np.ndarray, ratio: float, constraints: list[list[tuple[np.ndarray, int]]], seconds: float = 60.0
) -> np.ndarray | None:
    """The kept classes when grouped convolutions need equal counts per block: the most classes that the ratio
    allows (at most len - floor(ratio * len)) such that, in every constraint, each block keeps as many channels as
    the others (and at least one), and among those the most important; solved exactly as a small integer program
    (HiGHS through scipy). None when no selection removes anything."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(scores)
    remove = min(int(np.floor(ratio * n)), n - 1)
    if remove <= 0:
        return None
    rows, lower, upper = [np.ones(n)], [1.0], [float(n - remove)]
    for blocks in constraints:
        first, fixed = blocks[0]
        rows.append(first)  # every block keeps at least one channel
        lower.append(1.0 - fixed)
        upper.append(np.inf)
        for coeff, outside in blocks[1:]:
            rows.append(coeff - first)
            lower.append(float(fixed - outside))
            upper.append(float(fixed - outside))
    spread = scores.max() - scores.min()
    value = 1.0 + (scores - scores.min()) / ((spread or 1.0) * (n + 1))  # count first, importance breaks ties
    result = milp(
        -value,
        constraints=LinearConstraint(np.array(rows), lower, upper),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"time_limit": seconds},
    )
    if result.x is None:
        return None
    kept = np.flatnonzero(result.x > 0.5)
    return kept if len(kept) < n else None
