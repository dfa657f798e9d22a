"""onnxsmith: the Python SDK (`from onnxsmith import Client`) and the `onnxsmith` command."""

from onnxsmith.client import Client, OnnxsmithError

__all__ = ["Client", "OnnxsmithError"]
