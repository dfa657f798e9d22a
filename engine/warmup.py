"""Imported by the sandbox's forkserver before it forks job children: pays ONNX Runtime's one-time environment
set-up once, so each child's first session is cheaper.

The session here has one intra-op and one inter-op thread, so ONNX Runtime starts no thread pool threads in
the forkserver (forking a process with running threads is unsafe); it is dropped before any fork.
"""

from __future__ import annotations

import onnxruntime as ort
from onnx import TensorProto, helper

from engine.machine import machine_info
from engine.runtime import session_options


def _warm_up() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    del session


_warm_up()
machine_info()  # CPU model and flags read once here, inherited by every child
