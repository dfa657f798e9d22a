"""How much a group matters and which channels go: per-unit weight norms, a group's score from its members', and
the selection (the lowest-scoring channels, optionally the same ones from each of several aligned blocks, as
grouped convolutions and channel shuffles need)."""

from __future__ import annotations

import numpy as np


def importance(weights: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """L1 or L2 norm of each output unit's weights (the unit's slice along `axis`)."""
    w = weights.astype(np.float64)
    w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w**2).sum(axis=1))


def group_importance(scores: list[np.ndarray]) -> np.ndarray:
    """One score per channel of a group: each member's scores divided by their mean (a wide layer's large norms
    do not drown a narrow one's), averaged over the members."""
    normalised = [s / (s.mean() or 1.0) for s in scores]
    return np.mean(normalised, axis=0)


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


def select(scores: np.ndarray, ratio: float, blocks: int, unit: int = 1) -> np.ndarray | None:
    """The kept channels: the lowest-scoring `ratio` go, at least one stays; with `blocks`, the same relative
    channels go from every block (scores summed over the blocks); with `unit`, whole runs of `unit` channels (an
    attention head's head_dim) go or stay together, scored by their sum. None when the ratio removes none."""
    size = len(scores) // blocks
    per_block = scores.reshape(blocks, size).sum(axis=0)
    units = per_block.reshape(-1, unit).sum(axis=1)
    remove = min(int(np.floor(ratio * len(units))), len(units) - 1)
    if remove <= 0:
        return None
    kept_units = np.sort(np.argsort(units, kind="stable")[remove:])
    rel = (kept_units[:, None] * unit + np.arange(unit)[None, :]).ravel()
    return (np.arange(blocks)[:, None] * size + rel[None, :]).ravel()
