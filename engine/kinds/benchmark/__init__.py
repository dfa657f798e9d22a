"""The `benchmark` kind."""

from engine.kinds.benchmark.kind import KIND, BenchmarkParams, BenchmarkReport

__all__ = ["KIND", "BenchmarkParams", "BenchmarkReport"]
