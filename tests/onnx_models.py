"""Tiny ONNX models built with onnx.helper, good and bad, for the tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def mlp_model(n_in: int = 64, hidden: int = 32, n_out: int = 10, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((n_in, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(hidden, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, n_out)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(n_out, np.float32), "b2")
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])],
        [w1, b1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="onnxsmith-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp(path: Path, **kwargs) -> Path:
    return _save(mlp_model(**kwargs), path)


def cnn(path: Path, batch: int | str = "N") -> Path:
    """Conv(3->8, 3x3) -> Relu -> Reshape -> MatMul(7200->10) on 3x32x32 inputs."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((8 * 30 * 30, 10)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 8 * 30 * 30], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w, w2, shape],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    return _save(model, path)


CNN_MACS = 8 * 30 * 30 * 3 * 3 * 3 + 8 * 30 * 30 * 10


def big_mlp(path: Path, megabytes: int, fill: float = 1.0) -> Path:
    """A valid model whose one initializer takes about `megabytes` MB."""
    n = int(megabytes * (1 << 20) / 4 / 1024)
    w = numpy_helper.from_array(np.full((1024, n), fill, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    return _save(model, path)


def external_data(path: Path, location: str) -> Path:
    """A model whose weight claims to live in an external file at `location`."""
    model = mlp_model()
    w1 = model.graph.initializer[0]
    w1.ClearField("raw_data")
    w1.ClearField("float_data")
    w1.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(64 * 32 * 4))):
        entry = w1.external_data.add()
        entry.key, entry.value = key, value
    return _save(model, path)


def fails_checker(path: Path) -> Path:
    """A well-formed protobuf whose graph uses a value nobody produces."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    return _save(model, path)


def fails_runtime(path: Path) -> Path:
    """Passes onnx.checker (custom domain) but ONNX Runtime has no kernel for it."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    return _save(model, path)


def linear(path: Path, w: np.ndarray, b: np.ndarray, output: str = "logits") -> Path:
    """y = x @ w + b: a classifier (logits) or regressor whose predictions the tests can compute with numpy."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], [output])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    return _save(model, path)


def encoder(path: Path, vocab: int = 300, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A token encoder's signature: input_ids and attention_mask [batch, seq] (int64) in, last_hidden_state
    [batch, seq, hidden] out (embedding Gather, then MatMul + Relu residual blocks; the mask is not used inside, as
    in an encoder without attention, so padding positions carry real values that fidelity must leave out)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, hidden)).astype(np.float32), "embeddings")]
    nodes = [helper.make_node("Gather", ["embeddings", "input_ids"], ["h0"], name="embed")]
    for i in range(layers):
        w = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"], name=f"dense{i}"),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"act{i}"),
            helper.make_node("Add", [f"h{i}", f"r{i}"], [f"h{i + 1}"], name=f"residual{i}"),
        ]
    nodes.append(helper.make_node("Identity", [f"h{layers}"], ["last_hidden_state"], name="out"))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="onnxsmith-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return _save(model, path)


LIGHT_MODELS = (
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
    "vgg19", "zfnet512",
)  # fmt: skip


def light(name: str, path: Path, seed: int = 0) -> Path:
    """A real architecture from the onnx package's backend test data (onnx/backend/test/data/light/light_<name>.onnx)
    with random weights at its shapes: the "light" files replace every large weight by a ConstantOfShape node; here
    each becomes an initializer (He-normal for kernels and matrices, N(0, 0.1) for vectors, BatchNorm scales and
    variances near 1), Unsqueezes of constants are folded, and the initializers leave the graph's inputs (IR 4)."""
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    model = onnx.load(str(folder / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, tuple[onnx.NodeProto, int]] = {}
    for node in model.graph.node:
        for i, name_ in enumerate(node.input):
            users.setdefault(name_, (node, i))
    made: dict[str, np.ndarray] = {}
    keep_nodes = []
    for node in model.graph.node:
        ins = [made[i] if i in made else numpy_helper.to_array(inits[i]) if i in inits else None for i in node.input]
        if node.op_type == "ConstantOfShape" and ins[0] is not None:
            made[node.output[0]] = _random_weight(rng, [int(d) for d in ins[0]], *users.get(node.output[0], (None, -1)))
        elif node.op_type == "Unsqueeze" and ins[0] is not None and len(node.input) == 1:
            axes = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "axes")
            value = ins[0]
            for axis in sorted(axes):
                value = np.expand_dims(value, axis)
            made[node.output[0]] = value
        else:
            keep_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    used = {i for n in keep_nodes for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used and t.name not in made]
    kept += [numpy_helper.from_array(v, k) for k, v in made.items() if k in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    names = {t.name for t in kept}
    inputs = [i for i in model.graph.input if i.name not in names and i.name not in made and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)
    return _save(model, path)


def _random_weight(rng: np.random.Generator, shape: list[int], user: onnx.NodeProto | None, index: int) -> np.ndarray:
    op = user.op_type if user is not None else ""
    if op == "BatchNormalization" and index in (1, 4):  # scale, variance
        return (1.0 + 0.1 * np.abs(rng.standard_normal(shape))).astype(np.float32)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" or len(shape) > 2 else shape[0]
        if op == "Gemm" and any(a.name == "transB" and a.i for a in user.attribute):  # type: ignore[union-attr]
            fan_in = shape[1]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op == "Mul":  # a BatchNorm's scale exported as Mul
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)
