"""Calibration data for static quantization, in bounded batches the way ONNX Runtime's calibrators read them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CALIB_MERGE_EVERY = 8  # ORT merges collected calibration ranges every this many batches (bounded memory)


class Reader:
    """Calibration batches, bounded: only `max_samples` samples, `batch` at a time.

    `equal`: every batch the same size (ORT's histogram calibrators, entropy and percentile, stack the batches
    and fail on a short last one), dropping the remainder."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int, max_samples: int, equal: bool = False) -> None:
        n = min(next(iter(feeds.values())).shape[0], max_samples)
        if equal and n > batch:
            n -= n % batch
        self.batches = [{k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, n, batch)]
        if len(self.batches) % CALIB_MERGE_EVERY == 0:
            # ORT merges and clears collected ranges every CALIB_MERGE_EVERY batches and then fails with "No data
            # is collected" when nothing is left after the last merge: one batch more (equal: one fewer).
            last = self.batches.pop()
            size = next(iter(last.values())).shape[0]
            if not equal and size > 1:
                self.batches += [
                    {k: v[: size // 2] for k, v in last.items()},
                    {k: v[size // 2 :] for k, v in last.items()},
                ]
            elif not equal or not self.batches:
                self.batches.append(last)
            else:
                n -= size
        self.samples = n
        self.feeds, self.batch = feeds, batch
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:  # qdq_loss_debug.collect_activations iterates the reader
        return iter(self.batches)
