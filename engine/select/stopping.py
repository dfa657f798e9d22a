"""Early stopping, Keras' rule: an epoch improves when it beats the best so far by more than `min_delta`; training
stops after `patience` epochs without improvement and restores the best weights. Used live (distill's training
loop) and replayed on a recorded curve (diagnose's learning curves). Epochs are 1-based."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    minimize: bool
    min_delta: float = 0.0
    patience: int | None = None  # None: never stops
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped_epoch: int | None = None
    restored_epoch: int | None = None

    def update(self, epoch: int, value: float | None) -> bool:
        """Record the epoch's value; True when it is the new best. Non-finite values are skipped."""
        if value is None or not math.isfinite(value):
            return False
        best = self.best
        better = best is None or (value < best - self.min_delta if self.minimize else value > best + self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience and self.stopped_epoch is None:
            self.stopped_epoch, self.restored_epoch = epoch, self.best_epoch
        return False

    @property
    def should_stop(self) -> bool:
        return self.stopped_epoch is not None


def replay(values: list[float], minimize: bool, min_delta: float, patience: int) -> dict[str, Any]:
    """The rule replayed on a whole curve: the overall best epoch, where it would stop (None if it never does) and
    the epoch whose weights it would restore."""
    rule = EarlyStopping(minimize, min_delta, patience)
    for i, v in enumerate(values):
        rule.update(i + 1, v)
    return {
        "best_epoch": rule.best_epoch,
        "best_value": rule.best,
        "stopped_epoch": rule.stopped_epoch,
        "restored_epoch": rule.restored_epoch,
    }
