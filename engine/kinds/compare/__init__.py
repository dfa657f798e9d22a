"""The `compare` kind."""

from engine.kinds.compare.kind import KIND, CompareParams, CompareReport

__all__ = ["KIND", "CompareParams", "CompareReport"]
