"""The `distill` kind (PyTorch is imported only when a job runs)."""

from engine.kinds.distill.kind import KIND, DistillParams, DistillReport

__all__ = ["KIND", "DistillParams", "DistillReport"]
