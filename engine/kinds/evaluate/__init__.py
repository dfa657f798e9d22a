"""The `evaluate` kind."""

from engine.kinds.evaluate.kind import KIND, EvaluateParams, EvaluateReport

__all__ = ["KIND", "EvaluateParams", "EvaluateReport"]
