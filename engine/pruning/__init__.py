"""Structured pruning of ONNX graphs: which tensors must shrink together, and the surgery that shrinks them."""
