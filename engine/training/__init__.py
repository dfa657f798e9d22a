"""Training on an ONNX graph itself, shared by the kinds that train (distill, diagnose's data-size learning curve):
torch_graph.py runs the graph in PyTorch with its weights as parameters, loop.py is the training loop (loss,
epochs, early stopping by the shared rule). torch is imported lazily: the service imports this package without it.
"""

# Training throughput of the interpreter, optimistic on purpose (measured 4.7-6.4 GMAC/s forward+backward on the
# digits models, 1 thread, BENCHMARKS.md): a submit-time estimate refuses only runs that cannot fit the job limit.
OPTIMISTIC_MACS_PER_S = 10e9
