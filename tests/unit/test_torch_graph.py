# ruff: noqa: E501 - the table of op cases reads best one case per line
"""The training interpreter runs ONNX graphs like ONNX Runtime does, op by op (random inputs, onnx.helper fixtures)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.core.errors import EngineError
from tests import onnx_models

torch = pytest.importorskip("torch", reason="the training interpreter needs the train extra (torch==2.13.0)")

from engine.training.torch_graph import OnnxModule, max_disagreement, trainable_names  # noqa: E402

R = np.random.default_rng(0)


def _f(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _check(tmp_path, nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], out_shape=None, opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    diff = max_disagreement(str(path), OnnxModule(model), inputs)
    assert diff < 1e-4, diff


CASES = {
    "Gemm transB alpha beta": ([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)],
                               {"x": _f(4, 6)}, {"w": _f(3, 6), "b": _f(3)}),
    "MatMul 3-D": ([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": _f(2, 5, 6)}, {"w": _f(6, 4)}),
    "Add Sub Mul Div": ([helper.make_node("Add", ["x", "a"], ["t1"]), helper.make_node("Sub", ["t1", "a"], ["t2"]),
                         helper.make_node("Mul", ["t2", "a"], ["t3"]), helper.make_node("Div", ["t3", "d"], ["y"])],
                        {"x": _f(3, 4)}, {"a": _f(4), "d": np.full(4, 2.0, np.float32)}),
    "Conv pads stride group": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 1, 0], strides=[2, 1], group=2)],
                               {"x": _f(2, 4, 7, 7)}, {"w": _f(6, 2, 3, 3), "b": _f(6)}),
    "Conv asymmetric pads": ([helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 1, 0])],
                             {"x": _f(1, 2, 5, 5)}, {"w": _f(3, 2, 3, 3)}),
    "BatchNormalization": ([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                           {"x": _f(2, 3, 4, 4)}, {"s": _f(3), "b": _f(3), "m": _f(3), "v": np.abs(_f(3)) + 0.5}),
    "activations": ([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("LeakyRelu", ["a"], ["b"], alpha=0.2),
                     helper.make_node("Sigmoid", ["b"], ["c"]), helper.make_node("Tanh", ["c"], ["d"]),
                     helper.make_node("Erf", ["d"], ["y"])], {"x": _f(3, 5)}, {}),
    "Softmax LogSoftmax": ([helper.make_node("Softmax", ["x"], ["s"], axis=1), helper.make_node("LogSoftmax", ["s"], ["y"], axis=0)],
                           {"x": _f(3, 5)}, {}),
    "MaxPool AveragePool": ([helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                            {"x": _f(2, 3, 8, 8)}, {}),
    "GlobalAveragePool Flatten": ([helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])],
                                  {"x": _f(2, 3, 4, 4)}, {}),
    "Reshape Transpose Concat": ([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                                  helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                                  helper.make_node("Concat", ["t", "t"], ["y"], axis=1)],
                                 {"x": _f(2, 12)}, {"shape": np.array([0, 3, -1])}),
    "ReduceMean Squeeze Unsqueeze": ([helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
                                      helper.make_node("Squeeze", ["m", "ax"], ["s"]),
                                      helper.make_node("Unsqueeze", ["s", "ax"], ["y"])],
                                     {"x": _f(2, 5, 3)}, {"ax": np.array([1])}),
    "LayerNormalization Gelu-by-Erf Pow Sqrt": ([helper.make_node("LayerNormalization", ["x", "g", "b"], ["l"], axis=-1),
                                                 helper.make_node("Pow", ["l", "two"], ["p"]),
                                                 helper.make_node("Sqrt", ["p"], ["y"])],
                                                {"x": _f(2, 4, 6)}, {"g": _f(6), "b": _f(6), "two": np.array(2.0, np.float32)}),
    "Clip Identity Dropout Neg Exp": ([helper.make_node("Clip", ["x", "lo", "hi"], ["c"]), helper.make_node("Identity", ["c"], ["i"]),
                                       helper.make_node("Dropout", ["i"], ["d"]), helper.make_node("Neg", ["d"], ["n"]),
                                       helper.make_node("Exp", ["n"], ["y"])],
                                      {"x": _f(3, 4)}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_op_matches_onnxruntime(tmp_path, case) -> None:
    nodes, inputs, inits = CASES[case]
    _check(tmp_path, nodes, inputs, inits)


def test_gelu_op_of_opset_20(tmp_path) -> None:
    _check(tmp_path, [helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], {"x": _f(3, 4)}, {}, opset=20)


def test_unsupported_ops_are_named(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["y", "i"]), helper.make_node("NonZero", ["x"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([2]), "k")],
    )
    with pytest.raises(EngineError) as exc:
        OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert exc.value.code == "unsupported_op" and "['NonZero', 'TopK']" in exc.value.detail


def test_trained_values_go_back_into_the_same_graph(tmp_path) -> None:
    model = onnx_models.mlp_model(n_in=8, hidden=16, n_out=3)
    assert trainable_names(model) == {"w1", "b1", "w2", "b2"}
    module = OnnxModule(model)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.from_numpy(_f(32, 8))
    loss = module({"x": x})["logits"].pow(2).mean()
    loss.backward()
    opt.step()
    before = onnx.load_from_string(model.SerializeToString())
    module.write_back(model)
    assert [n.SerializeToString() for n in model.graph.node] == [n.SerializeToString() for n in before.graph.node]
    assert [i.name for i in model.graph.initializer] == [i.name for i in before.graph.initializer]
    changed = numpy_helper.to_array(model.graph.initializer[0]) - numpy_helper.to_array(before.graph.initializer[0])
    assert np.abs(changed).max() > 0
    path = tmp_path / "trained.onnx"
    onnx.save(model, str(path))
    assert max_disagreement(str(path), module, {"x": x.numpy()}) < 1e-5


def test_the_mask_and_index_arithmetic_of_an_exported_transformer(tmp_path) -> None:
    """Shape, Gather (scalar and tensor indices, an embedding table), Range, Unsqueeze, Expand, Equal/And/Not,
    Where, Cast to bool and int64, ConstantOfShape, Slice, GatherElements: what a PyTorch export of a transformer
    builds its attention mask and positions with. The interpreter agrees with ONNX Runtime."""
    one = lambda name, v, dtype=np.int64: numpy_helper.from_array(np.array(v, dtype), name)  # noqa: E731
    inits = [
        numpy_helper.from_array(_f(50, 6), "table"), one("i1", 1), one("zero", 0), one("step", 1), one("ax0", [0]),
        one("three", 3), one("s0", [0]), one("e1", [1]), one("ax1", [1]), one("shape2", [2, 3]),
        numpy_helper.from_array(np.array([[0, 2, 1], [1, 0, 2]], np.int64), "ge_idx"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),  # [N, S, 6]
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "i1"], ["seq"]),  # a scalar index: a scalar
        helper.make_node("Range", ["zero", "seq", "step"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "ax0"], ["pos2"]),
        helper.make_node("Expand", ["pos2", "shape"], ["positions"]),  # [N, S]
        helper.make_node("Equal", ["ids", "three"], ["is3"]),
        helper.make_node("Cast", ["mask"], ["maskb"], to=TensorProto.BOOL),
        helper.make_node("Not", ["is3"], ["not3"]),
        helper.make_node("And", ["maskb", "not3"], ["keep"]),
        helper.make_node("Cast", ["positions"], ["posf"], to=TensorProto.FLOAT),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["zeros"], value=numpy_helper.from_array(np.array([0.0], np.float32))
        ),
        helper.make_node("Where", ["keep", "posf", "zeros"], ["w"]),  # [N, S]
        helper.make_node("Unsqueeze", ["w", "two_axis"], ["w3"]),
        helper.make_node("Mul", ["emb", "w3"], ["weighted"]),
        helper.make_node("Slice", ["weighted", "s0", "e1", "ax1"], ["first"]),  # [N, 1, 6]
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT64),
        helper.make_node(
            "ConstantOfShape", ["shape2"], ["pad"], value=numpy_helper.from_array(np.array([1.0], np.float32))
        ),
        helper.make_node("GatherElements", ["pad", "ge_idx"], ["ge"], axis=1),
        helper.make_node("ReduceMean", ["first"], ["y0"], axes=[1], keepdims=0),  # [N, 6]
        helper.make_node("ReduceMean", ["ge"], ["g0"], keepdims=1),
        helper.make_node("Add", ["y0", "g0"], ["y"]),
    ]
    inits.append(one("two_axis", [2]))
    graph = helper.make_graph(
        nodes,
        "masks",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "masks.onnx"
    onnx.save(model, str(path))
    ids = R.integers(0, 50, (4, 7)).astype(np.int64)
    ids[0, 2] = 3
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    assert max_disagreement(str(path), OnnxModule(model), {"ids": ids, "mask": mask}) < 1e-6
