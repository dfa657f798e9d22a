"""The `optimize` kind."""

from engine.kinds.optimize.kind import KIND
from engine.kinds.optimize.plan import OptimizeParams, OptimizeReport

__all__ = ["KIND", "OptimizeParams", "OptimizeReport"]
