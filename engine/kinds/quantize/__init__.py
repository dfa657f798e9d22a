"""The `quantize` kind."""

from engine.kinds.quantize.kind import KIND, QuantizeReport
from engine.kinds.quantize.params import QuantizeParams

__all__ = ["KIND", "QuantizeParams", "QuantizeReport"]
