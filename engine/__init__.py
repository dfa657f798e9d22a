"""All ONNX and numpy work. Plain functions with typed parameters and results; no HTTP, queue or DB."""
