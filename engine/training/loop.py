"""The training loop on an ONNX graph run by the PyTorch interpreter: distillation (the student learns from the
teacher's outputs and, with `alpha` > 0, from the labels) and plain training on labels (alpha 1, no teacher: the
diagnose job's data-size learning curve). torch is imported by the caller, never at import time.

Loss — classification: alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) ||
softmax(student / T)); regression: alpha * MSE(student, labels) + (1 - alpha) * MSE(student, teacher). An output
that is already probabilities (a Softmax at the end) is trained through its log, never as logits.
Early stopping is the shared rule (engine.select.stopping); a NaN loss stops training and restores the best
weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.kind import Progress
from engine.select.stopping import EarlyStopping


@dataclass
class Split:
    """One split as tensors: feeds (numpy, sliced per batch), hard labels and the teacher's soft targets."""

    feeds: dict[str, np.ndarray]
    labels: Any  # torch tensor or None
    soft: Any  # torch tensor, or None when training on labels alone

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values())))


@dataclass
class Trained:
    history: dict[str, list[float | None]]
    best_epoch: int | None
    stopped_early: bool
    diverged_at: int | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


class Distiller:
    def __init__(
        self,
        module: Any,
        output: str,
        classification: bool,
        temperature: float,
        alpha: float,
        probabilities: bool = False,
    ) -> None:
        import torch

        self.torch, self.F = torch, torch.nn.functional
        self.module, self.output, self.classification = module, output, classification
        self.T, self.alpha, self.probabilities = temperature, alpha, probabilities

    def logits(self, out: Any) -> Any:
        """The output as [batch, classes] logits: log of probabilities, a single binary logit as [0, z]."""
        torch = self.torch
        out = out.reshape(out.shape[0], -1)
        if self.probabilities:
            out = torch.log(out.clamp_min(1e-12)) if out.shape[1] > 1 else torch.logit(out, eps=1e-6)
        if out.shape[1] == 1:  # one logit: a binary classifier as two logits [0, z]
            out = torch.cat([torch.zeros_like(out), out], dim=1)
        return out

    def loss(self, out: Any, y: Any, t: Any) -> Any:
        F, T, alpha = self.F, self.T, self.alpha
        if self.classification:
            out = self.logits(out)
            kd = out.new_zeros(())
            if t is not None and alpha < 1:
                kd = F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
                              reduction="batchmean") * T * T  # fmt: skip
            hard = F.cross_entropy(out, y) if y is not None and alpha > 0 else out.new_zeros(())
        else:
            out = out.reshape(out.shape[0], -1)
            kd = F.mse_loss(out, t) if t is not None and alpha < 1 else out.new_zeros(())
            hard = F.mse_loss(out, y) if y is not None and alpha > 0 else out.new_zeros(())
        return alpha * hard + (1 - alpha) * kd

    def _feeds(self, feeds: dict[str, np.ndarray], idx: Any) -> dict[str, Any]:
        return {k: self.torch.from_numpy(np.ascontiguousarray(v[idx.numpy()])) for k, v in feeds.items()}

    def evaluate(self, split: Split) -> tuple[float, float | None]:
        """Mean loss and, for a labeled classifier, accuracy on a split."""
        torch = self.torch
        with torch.no_grad():
            total, correct, n = 0.0, 0, len(split)
            for idx in torch.arange(n).split(1024):
                out = self.module(self._feeds(split.feeds, idx))[self.output].reshape(len(idx), -1)
                y = split.labels[idx] if split.labels is not None else None
                total += float(self.loss(out, y, split.soft[idx] if split.soft is not None else None)) * len(idx)
                if self.classification and y is not None:
                    correct += int((self.logits(out).argmax(1) == y).sum())
            labeled = self.classification and split.labels is not None
            return total / n, (correct / n if labeled else None)

    def _epoch(self, opt: Any, train: Split, batch_size: int, gen: Any) -> float | None:
        """One pass over the training data; None when the loss became NaN/inf."""
        torch = self.torch
        running, seen = 0.0, 0
        for idx in torch.randperm(len(train), generator=gen).split(batch_size):
            opt.zero_grad()
            out = self.module(self._feeds(train.feeds, idx))[self.output]
            soft = train.soft[idx] if train.soft is not None else None
            loss = self.loss(out, train.labels[idx] if train.labels is not None else None, soft)
            if not torch.isfinite(loss):
                return None
            loss.backward()
            opt.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
        return running / max(seen, 1)

    def fit(self, opt: Any, train: Split, val: Split | None, *, params: Any, progress: Progress) -> Trained:
        """Train for at most params.epochs with early stopping on params.monitor; restores the best weights."""
        torch = self.torch
        history: dict[str, list[float | None]] = {"loss": [], "val_loss": [], "val_accuracy": []}
        rule = EarlyStopping(params.monitor != "val_accuracy", params.min_delta, params.patience)
        best_state, diverged, warnings = self.module.state(), None, []
        gen = torch.Generator().manual_seed(params.seed)
        started = time.perf_counter()
        for epoch in range(1, params.epochs + 1):
            train_loss = self._epoch(opt, train, params.batch_size, gen)
            if train_loss is None:
                diverged = epoch
                warnings.append(f"the loss became NaN/inf at epoch {epoch}: training stopped, best weights restored")
                break
            val_loss, val_acc = self.evaluate(val) if val is not None else (None, None)
            history["loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            progress(
                0.1 + 0.6 * epoch / params.epochs,
                f"epoch {epoch}/{params.epochs}: train loss {train_loss:.4g}"
                + (f", validation loss {val_loss:.4g}" if val_loss is not None else ""),
            )
            value = {"loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}[params.monitor]
            if rule.update(epoch, value):
                best_state = self.module.state()
            if rule.should_stop:
                break
        seconds = time.perf_counter() - started
        if params.restore_best_weights or diverged:
            self.module.load_state(best_state)
        if all(v is None for v in history["val_accuracy"]):
            history.pop("val_accuracy")
        if val is None:
            history.pop("val_loss")
        return Trained(history, rule.best_epoch, rule.should_stop, diverged, seconds, warnings)
