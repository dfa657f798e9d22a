"""The `prune` kind."""

from engine.kinds.prune.kind import KIND, PruneReport
from engine.kinds.prune.params import PruneParams

__all__ = ["KIND", "PruneParams", "PruneReport"]
