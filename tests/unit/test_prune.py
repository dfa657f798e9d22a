"""The prune kind (simplify, magnitude) on small models, called the way the sandbox calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.core.errors import EngineError
from engine.inspect import check_and_inspect
from engine.kinds.prune import KIND as PRUNE
from engine.kinds.prune import PruneParams
from engine.registry import run_in_child
from tests import data_files, onnx_models
from tests.job_inputs import job_inputs

validate = PRUNE.validate

PARAMS = {"runs": 5, "warmup_runs": 1, "batch_sizes": [1]}


def _inputs(tmp_path: Path, model: Path, **datasets: Path) -> dict:
    return job_inputs(tmp_path, model, max_threads=1, **datasets)


def cluttered_cnn(path: Path) -> Path:
    """What exporters leave behind: Identity nodes, Conv + BatchNormalization, MatMul + Add, a foldable Mul."""
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bias": rng.normal(0, 0.1, 8).astype(np.float32),
        "mean": rng.normal(0, 0.1, 8).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "w2": rng.standard_normal((8 * 8 * 8, 10)).astype(np.float32) * 0.05,
        "b2": rng.normal(0, 0.1, 10).astype(np.float32),
        "half": np.array(0.5, np.float32),
        "two": np.array(2.0, np.float32),
    }
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"], name="id_in"),
        helper.make_node("Conv", ["x1", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Mul", ["half", "two"], ["one"], name="const_mul"),  # foldable: 0.5 * 2
        helper.make_node("Mul", ["f", "one"], ["f1"], name="times_one"),
        helper.make_node("MatMul", ["f1", "w2"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "b2"], ["a"], name="fc_bias"),
        helper.make_node("Identity", ["a"], ["y"], name="id_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "cluttered",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=onnx_models.OPSET, ir_version=8), str(path))
    return path


def test_simplify_cleans_up_and_keeps_the_outputs(tmp_path) -> None:
    model = cluttered_cnn(tmp_path / "c.onnx")
    x = np.random.default_rng(1).standard_normal((40, 3, 8, 8)).astype(np.float32)
    evald = data_files.npz(tmp_path / "e.npz", x=x)
    report = run_in_child("prune", _inputs(tmp_path, model, eval=evald), {"method": "simplify", **PARAMS})["report"]
    produced = onnx.load(str(tmp_path / "out" / "model.simplify.onnx"))
    ops = [n.op_type for n in produced.graph.node]
    assert "BatchNormalization" not in ops and "Identity" not in ops and "MatMul" not in ops, ops
    assert "Gemm" in ops and ops.count("Mul") == 0  # folded and removed: the multiplication by 1
    assert [o.name for o in produced.graph.output] == ["y"]
    assert report["op_changes"]["BatchNormalization"] == -1 and report["nodes"]["pruned"] < report["nodes"]["original"]
    assert report["max_abs_difference"] < 1e-4
    a = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(tmp_path / "out" / "model.simplify.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert report["comparison"]["fidelity"][0]["cosine"] > 0.99999


def test_magnitude_per_layer_zeroes_the_smallest_weights(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=64, hidden=128, n_out=10)
    report = run_in_child("prune", _inputs(tmp_path, model), {"method": "magnitude", "ratio": 0.5, **PARAMS})["report"]
    produced = onnx.load(str(tmp_path / "out" / "model.magnitude.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in produced.graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    for name in ("w1", "w2"):
        assert (weights[name] == 0).mean() == pytest.approx(0.5, abs=1e-3)
        kept = weights[name] != 0  # the kept weights are the largest ones, unchanged
        assert np.abs(original[name][kept]).min() >= np.abs(original[name][~kept]).max()
        np.testing.assert_array_equal(weights[name][kept], original[name][kept])
    np.testing.assert_array_equal(weights["b1"], original["b1"])  # biases are not pruned
    rows = {r["weight"]: r for r in report["layers"]}
    assert set(rows) == {"w1", "w2"} and rows["w1"]["sparsity_after"] == pytest.approx(0.5, abs=1e-3)
    assert report["nonzero_parameters"]["pruned"] == pytest.approx(
        report["nonzero_parameters"]["original"] - (64 * 128 + 128 * 10) / 2, abs=2
    )
    assert report["parameters"]["pruned"] == report["parameters"]["original"]  # dense storage: same count
    assert report["gzip_size_bytes"]["pruned"] < 0.75 * report["gzip_size_bytes"]["original"]
    assert any("stored densely" in w for w in report["warnings"])


def test_magnitude_global_uses_one_threshold(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=64, hidden=128, n_out=10)
    params = {"method": "magnitude", "ratio": 0.3, "scope": "global", **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model), params)["report"]
    rows = {r["weight"]: r for r in report["layers"]}
    zeros = sum(r["sparsity_after"] * np.prod(r["shape"]) for r in rows.values())
    assert zeros / (64 * 128 + 128 * 10) == pytest.approx(0.3, abs=0.01)
    assert report["config"]["global_threshold"] > 0


def test_magnitude_exclusions_and_per_layer_ratios(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=64, hidden=128, n_out=10)
    params = {"method": "magnitude", "ratios": {"w1": 0.8}, "exclude": ["fc2"], **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model), params)["report"]
    assert [r["weight"] for r in report["layers"]] == ["w1"] and report["layers"][0]["sparsity_after"] == pytest.approx(
        0.8, abs=1e-3
    )
    assert report["left_alone"] == [{"layer": "fc2", "weight": "w2", "why": "excluded by params.exclude"}]
    params = {"method": "magnitude", "ratio": 0.5, "exclude_op_types": ["Gemm"], **PARAMS}
    with pytest.raises(EngineError) as exc:
        run_in_child("prune", _inputs(tmp_path, model), params)
    assert exc.value.code == "nothing_to_prune"


def test_bad_requests(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx")
    with pytest.raises(EngineError) as exc:
        run_in_child("prune", _inputs(tmp_path, model), {"method": "magnitude", "ratios": {"nope": 0.5}, **PARAMS})
    assert exc.value.code == "unknown_layer" and "nope" in exc.value.detail
    info = check_and_inspect(str(model))
    with pytest.raises(EngineError, match="ratio"):
        validate(info, {}, PruneParams(method="magnitude"))
    for bad in ({"ratio": 1.0}, {"ratio": 0}, {"ratios": {"w1": 1.5}}, {"method": "channels"}):
        with pytest.raises(ValueError):
            PruneParams.model_validate({"method": "magnitude", **bad})


def test_simplify_does_not_fold_constants_into_a_bigger_file(tmp_path) -> None:
    """Expand(scalar, [512, 1024]) would fold into a 2 MB initializer: above fold_size_limit, it stays a node."""
    inits = [
        numpy_helper.from_array(np.array(1.5, np.float32), "s"),
        numpy_helper.from_array(np.array([512, 1024]), "shape"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Expand", ["s", "shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])],
        "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 1024])],
        inits,
    )
    model = tmp_path / "expand.onnx"
    onnx.save(helper.make_model(graph, opset_imports=onnx_models.OPSET, ir_version=8), str(model))
    report = run_in_child("prune", _inputs(tmp_path, model), {"method": "simplify", **PARAMS})["report"]
    assert report["comparison"]["size_bytes"]["candidate"] < 1000  # not a 2 MB constant (a few bytes of metadata)
    assert "Expand" in report["output_model"]["info"]["op_histogram"]


# -- structured -----------------------------------------------------------------------------------------------
def _model(path: Path, nodes, inits: dict, x_shape, y_shape) -> Path:
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=onnx_models.OPSET, ir_version=8), str(path))
    return path


def _conv(rng, cout, cin, k=3, zero=()):
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.3
    w[list(zero)] = 0.0
    return w


def residual_concat_cnn(path: Path, zero: bool) -> Path:
    """conv_a -> relu -> conv_b -> Add(residual) -> relu -> [conv_c | conv_d] -> Concat -> depthwise -> conv_e ->
    relu -> GlobalAveragePool -> Flatten -> Gemm. With `zero`, some channels of c, d and e are all-zero (and
    their biases 0), and conv_a and conv_b (coupled by the residual Add: one group) share four all-zero channels:
    removing exactly those must leave the output unchanged."""
    rng = np.random.default_rng(2)
    inits = {
        "wa": _conv(rng, 8, 3, zero=(1, 4, 6, 7) if zero else ()),
        "wb": _conv(rng, 8, 8, zero=(1, 4, 6, 7) if zero else ()),
        "wc": _conv(rng, 4, 8, zero=(1, 3) if zero else ()), "wd": _conv(rng, 4, 8, zero=(0, 2) if zero else ()),
        "wdw": rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "bdw": np.zeros(8, np.float32),
        "we": _conv(rng, 6, 8, zero=(0, 4, 5) if zero else ()), "be": np.zeros(6, np.float32),
        "wf": rng.standard_normal((10, 6)).astype(np.float32), "bf": np.zeros(10, np.float32),
    }  # fmt: skip
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", **pad),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b", **pad),
        helper.make_node("Add", ["b", "ra"], ["res"], name="residual"),
        helper.make_node("Relu", ["res"], ["rr"], name="relu_res"),
        helper.make_node("Conv", ["rr", "wc"], ["c"], name="conv_c", **pad),
        helper.make_node("Conv", ["rr", "wd"], ["d"], name="conv_d", **pad),
        helper.make_node("Concat", ["c", "d"], ["cd"], axis=1, name="concat"),
        helper.make_node("Conv", ["cd", "wdw", "bdw"], ["dw"], group=8, name="depthwise", **pad),
        helper.make_node("Conv", ["dw", "we", "be"], ["e"], name="conv_e", **pad),
        helper.make_node("Relu", ["e"], ["re"], name="relu_e"),
        helper.make_node("GlobalAveragePool", ["re"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"], transB=1, name="fc"),
    ]
    return _model(path, nodes, inits, ["N", 3, 8, 8], ["N", 10])


def plain_cnn(path: Path, zero: bool) -> Path:
    rng = np.random.default_rng(3)
    w1 = _conv(rng, 8, 3, zero=(2, 5, 6, 7) if zero else ())
    w2 = _conv(rng, 16, 8, zero=tuple(range(0, 16, 2)) if zero else ())
    inits = {
        "w1": w1, "b1": np.zeros(8, np.float32), "w2": w2, "b2": np.zeros(16, np.float32),
        "w3": rng.standard_normal((16 * 4 * 4, 10)).astype(np.float32) * 0.1, "shape": np.array([-1, 256]),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Reshape", ["p2", "shape"], ["f"], name="to_features"),
        helper.make_node("MatMul", ["f", "w3"], ["y"], name="fc"),
    ]
    return _model(path, nodes, inits, ["N", 3, 8, 8], ["N", 10])


def _structured(tmp_path, model, **params) -> tuple[dict, Path]:
    report = run_in_child("prune", _inputs(tmp_path, model), {"method": "structured", **PARAMS, **params})["report"]
    return report, tmp_path / "out" / "model.structured.onnx"


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


def test_structured_mlp_removes_neurons_and_the_rows_that_read_them(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=64, hidden=128, n_out=10)
    report, produced = _structured(tmp_path, model, ratio=0.5)
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes == {"w1": [64, 64], "b1": [64], "w2": [64, 10], "b2": [10]}
    assert report["layers"] == [
        {
            "layer": "fc1",
            "weight": "w1",
            "op": "Gemm",
            "units_before": 128,
            "units_after": 64,
            "importance": "L1 norm",
            "group": "fc1",
        }
    ]
    assert report["left_alone"][0]["layer"] == "fc2" and "graph output" in report["left_alone"][0]["why"]
    assert report["parameters"]["original"] - report["parameters"]["pruned"] == 64 * 64 + 64 + 64 * 10
    assert report["macs_per_sample"]["pruned"] < report["macs_per_sample"]["original"]
    assert any("fine-tuning" in w for w in report["warnings"])


def test_structured_removing_dead_neurons_leaves_the_output_unchanged(tmp_path) -> None:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((20, 12)).astype(np.float32)
    w1[:, [1, 4, 5, 9]] = 0  # four hidden neurons that always output relu(0) = 0
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
    ]
    inits = {"w1": w1, "b1": np.zeros(12, np.float32), "w2": rng.standard_normal((12, 3)).astype(np.float32),
             "b2": np.zeros(3, np.float32)}  # fmt: skip
    model = _model(tmp_path / "dead.onnx", nodes, inits, ["N", 20], ["N", 3])
    _, produced = _structured(tmp_path, model, ratios={"w1": 0.34})  # 4 of 12
    x = rng.standard_normal((16, 20)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(model, x), rtol=1e-5, atol=1e-5)
    assert {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}["w2"] == [8, 3]


def test_structured_plain_cnn_through_pooling_and_reshape(tmp_path) -> None:
    x = np.random.default_rng(4).standard_normal((6, 3, 8, 8)).astype(np.float32)
    zeroed = plain_cnn(tmp_path / "z.onnx", zero=True)
    report, produced = _structured(tmp_path, zeroed, ratio=0.5)
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes["w1"] == [4, 3, 3, 3] and shapes["w2"] == [8, 4, 3, 3] and shapes["w3"] == [8 * 16, 10]
    assert onnx.numpy_helper.to_array(
        next(t for t in onnx.load(str(produced)).graph.initializer if t.name == "shape")
    ).tolist() == [-1, 128]
    # The zeroed channels are the least important: removing them changes nothing.
    np.testing.assert_allclose(_outputs(produced, x), _outputs(zeroed, x), rtol=1e-5, atol=1e-5)
    assert [r["layer"] for r in report["layers"]] == ["conv1", "conv2"]


def test_structured_residual_and_concat(tmp_path) -> None:
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    zeroed = residual_concat_cnn(tmp_path / "r.onnx", zero=True)
    report, produced = _structured(tmp_path, zeroed, ratio=0.5)
    pruned = {r["layer"]: r for r in report["layers"]}
    alone = {a["layer"]: a["why"] for a in report["left_alone"]}
    # through the Concat, the depthwise conv, GAP and Flatten; conv_a and conv_b as one group (the residual Add)
    assert set(pruned) == {"conv_a", "conv_b", "conv_c", "conv_d", "conv_e"}
    assert pruned["conv_a"]["group"] == pruned["conv_b"]["group"] and "group of 2" in pruned["conv_b"]["importance"]
    assert "graph output" in alone["fc"]
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes["wc"] == [2, 4, 3, 3] and shapes["wd"] == [2, 4, 3, 3] and shapes["wdw"] == [4, 1, 3, 3]
    assert shapes["we"] == [3, 4, 3, 3] and shapes["wf"] == [10, 3] and shapes["wa"] == [4, 3, 3, 3]
    assert shapes["wb"] == [4, 4, 3, 3]
    group = next(
        a.i
        for n in onnx.load(str(produced)).graph.node
        if n.name == "depthwise"
        for a in n.attribute
        if a.name == "group"
    )
    assert group == 4
    np.testing.assert_allclose(_outputs(produced, x), _outputs(zeroed, x), rtol=1e-5, atol=1e-5)
    # layer by layer (coupled: leave), as before dependency groups: the residual pair stays whole
    report, _ = _structured(tmp_path, zeroed, ratio=0.5, coupled="leave")
    alone = {a["layer"]: a["why"] for a in report["left_alone"]}
    assert {r["layer"] for r in report["layers"]} == {"conv_c", "conv_d", "conv_e"}
    assert "coupled: leave" in alone["conv_a"] and "coupled: leave" in alone["conv_b"]


def test_per_channel_constants_are_sliced_and_a_residual_with_an_input_is_refused(tmp_path) -> None:
    """conv_a -> Mul [C,1,1] -> Add [C,1,1] (a BatchNorm exported as Mul + Add, DenseNet's) -> PRelu [C,1,1] ->
    conv_b -> GAP -> Flatten -> Gemm: the constants are sliced with the channels, and removing conv_a's all-zero
    channels (zero scale-shifted to 0 by a zero shift) leaves the output unchanged. A conv whose output is added to
    the graph's input stays whole: nothing prunable produces the other side of that Add."""
    rng = np.random.default_rng(4)
    zero = (0, 3, 5)
    shift = rng.standard_normal((6, 1, 1)).astype(np.float32)
    shift[list(zero)] = 0.0
    inits = {
        "wa": _conv(rng, 6, 3, zero=zero), "scale": rng.standard_normal((6, 1, 1)).astype(np.float32),
        "shift": shift, "slope": np.full((6, 1, 1), 0.1, np.float32), "wb": _conv(rng, 4, 6),
        "wr": _conv(rng, 3, 3), "wf": rng.standard_normal((10, 4)).astype(np.float32),
    }  # fmt: skip
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "wr"], ["r"], name="conv_r", **pad),
        helper.make_node("Add", ["r", "x"], ["xr"], name="input_residual"),
        helper.make_node("Conv", ["xr", "wa"], ["a"], name="conv_a", **pad),
        helper.make_node("Mul", ["a", "scale"], ["m"], name="bn_mul"),
        helper.make_node("Add", ["m", "shift"], ["s"], name="bn_add"),
        helper.make_node("PRelu", ["s", "slope"], ["p"], name="prelu"),
        helper.make_node("Conv", ["p", "wb"], ["b"], name="conv_b", **pad),
        helper.make_node("GlobalAveragePool", ["b"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc"),
    ]
    model = _model(tmp_path / "bn.onnx", nodes, inits, ["N", 3, 8, 8], ["N", 10])
    report, _ = _structured(tmp_path, model, ratio=0.5)
    alone = {a["layer"]: a["why"] for a in report["left_alone"]}
    assert {r["layer"] for r in report["layers"]} == {"conv_a", "conv_b"}, report["left_alone"]
    assert "input_residual" in alone["conv_r"] and "no prunable layer produces" in alone["conv_r"]
    report, produced = _structured(tmp_path, model, ratios={"wa": 0.5})  # conv_a alone: its zero channels go
    assert [r["layer"] for r in report["layers"]] == ["conv_a"]
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes["scale"] == shapes["shift"] == shapes["slope"] == [3, 1, 1] and shapes["wb"] == [4, 3, 3, 3]
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(model, x), rtol=1e-5, atol=1e-5)


def test_grouped_convolutions_and_a_channel_shuffle_prune_aligned_channels_exactly(tmp_path) -> None:
    """ShuffleNet's unit in small: a grouped 1x1 conv (group 2, 8 outputs) -> Relu -> channel shuffle (Reshape
    [N, 2, 4, H, W], Transpose, Reshape) -> depthwise 3x3 -> grouped 1x1 conv (group 2) -> GAP -> Gemm. The
    shuffle needs the same channels kept in each of the producer's 2 blocks (columns of its [2, 4] grid go
    together), the grouped consumer after it as many channels in each of its own 2 blocks; with those channels
    all-zero, removing them leaves the output unchanged, and the shapes and the shuffle's constants shrink."""
    rng = np.random.default_rng(7)
    wg = rng.standard_normal((8, 2, 1, 1)).astype(np.float32)
    wg[[1, 3, 5, 7]] = 0.0  # columns 1 and 3 of the [2, 4] grid: after the shuffle, one in each consumer block
    inits = {
        "wg": wg, "s5": np.array([0, 2, 4, 6, 6], np.int64), "s4": np.array([0, 8, 6, 6], np.int64),
        "wdw": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
        "wc": rng.standard_normal((6, 4, 1, 1)).astype(np.float32),
        "wf": rng.standard_normal((10, 6)).astype(np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "wg"], ["g"], group=2, name="gconv"),
        helper.make_node("Relu", ["g"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "s5"], ["r5"], name="split_groups"),
        helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4], name="shuffle"),
        helper.make_node("Reshape", ["t5", "s4"], ["sh"], name="merge_groups"),
        helper.make_node("Conv", ["sh", "wdw"], ["dw"], group=8, pads=[1, 1, 1, 1], name="depthwise"),
        helper.make_node("Conv", ["dw", "wc"], ["c"], group=2, name="gconv_out"),
        helper.make_node("GlobalAveragePool", ["c"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc"),
    ]
    model = _model(tmp_path / "shuffle.onnx", nodes, inits, ["N", 4, 6, 6], ["N", 10])
    report, produced = _structured(tmp_path, model, ratios={"wg": 0.5})
    assert [r["layer"] for r in report["layers"]] == ["gconv"], report["left_alone"]
    assert (
        "equal counts" in report["layers"][0]["importance"] and "shuffle-aligned" in report["layers"][0]["importance"]
    )
    pruned = onnx.load(str(produced))
    shapes = {t.name: list(t.dims) for t in pruned.graph.initializer}
    values = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert shapes["wg"] == [4, 2, 1, 1] and shapes["wdw"] == [4, 1, 3, 3] and shapes["wc"] == [6, 2, 1, 1]
    assert values["s5"] == [0, 2, 2, 6, 6] and values["s4"] == [0, 4, 6, 6]
    x = np.random.default_rng(8).standard_normal((3, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(model, x), rtol=1e-5, atol=1e-5)
    # the whole model at 0.5: gconv_out (group 2) is pruned too, in equal halves of its groups
    report, produced = _structured(tmp_path, model, ratio=0.5)
    assert {r["layer"] for r in report["layers"]} == {"gconv", "gconv_out"}
    assert _outputs(produced, x).shape == (3, 10)
    # the weakest columns (0 and 1) would put both kept channels in the consumer's first block after the shuffle;
    # equal counts there keep one column of each half: the selection is not just the top scores
    wg[:] = rng.standard_normal(wg.shape).astype(np.float32)
    wg[[0, 1, 4, 5]] *= 0.01
    wg[[2, 6]] *= 0.1
    inits["wg"] = wg
    model = _model(tmp_path / "shuffle2.onnx", nodes, inits, ["N", 4, 6, 6], ["N", 10])
    report, produced = _structured(tmp_path, model, ratios={"wg": 0.5})
    kept = onnx.numpy_helper.to_array(next(t for t in onnx.load(str(produced)).graph.initializer if t.name == "wg"))
    np.testing.assert_array_equal(kept, wg[[1, 3, 5, 7]])  # column 1 (weak) with column 3, not columns 2 and 3
    assert _outputs(produced, x).shape == (3, 10)


def test_a_shufflenet_trunk_of_concat_and_sums_prunes_as_one_group_exactly(tmp_path) -> None:
    """ShuffleNet's stage in small: conv0 (6 channels) -> Relu feeds a grouped conv `a` (group 2) and an
    AveragePool; Concat [a, pool] is the stage's 12 channels, which a grouped conv `c` (group 2) reads and adds its
    output to (a residual). The trunk's channels (a's, conv0's through the pool, c's outputs) are one group: the
    same channels go from every member, with equal counts in every grouped conv's blocks (a's outputs and inputs,
    c's outputs and its inputs: a's half and conv0's half of the Concat). With those channels all-zero, removing
    them leaves the output unchanged."""
    rng = np.random.default_rng(11)
    w0, wa, wc = (rng.standard_normal(s).astype(np.float32) for s in [(6, 3, 3, 3), (6, 3, 3, 3), (12, 6, 3, 3)])
    w0[[0, 5]] = 0.0  # trunk channels 6 and 11 (one in each of conv0's halves, which a reads in 2 groups)
    wa[[1, 4]] = 0.0  # trunk channels 1 and 4 (one in each of a's 2 groups)
    wc[[1, 4, 6, 11]] = 0.0  # the same trunk channels out of c: 2 in each of its 2 groups
    pad = {"pads": [1, 1, 1, 1]}
    inits = {"w0": w0, "wa": wa, "wc": wc, "wf": rng.standard_normal((10, 12)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", **pad),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "wa"], ["a"], group=2, name="a", **pad),
        helper.make_node("AveragePool", ["r0"], ["p"], kernel_shape=[1, 1], name="pool"),
        helper.make_node("Concat", ["a", "p"], ["s"], axis=1, name="concat"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu_s"),
        helper.make_node("Conv", ["rs", "wc"], ["c"], group=2, name="c", **pad),
        helper.make_node("Add", ["c", "rs"], ["t"], name="residual"),
        helper.make_node("GlobalAveragePool", ["t"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc"),
    ]
    model = _model(tmp_path / "trunk.onnx", nodes, inits, ["N", 3, 6, 6], ["N", 10])
    report, produced = _structured(tmp_path, model, ratio=0.34)
    after = {r["layer"]: (r["units_before"], r["units_after"], r["group"]) for r in report["layers"]}
    assert after == {"conv0": (6, 4, "conv0"), "a": (6, 4, "conv0"), "c": (12, 8, "conv0")}, report
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes == {"w0": [4, 3, 3, 3], "wa": [4, 2, 3, 3], "wc": [8, 4, 3, 3], "wf": [10, 8]}
    x = np.random.default_rng(12).standard_normal((3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(model, x), rtol=1e-5, atol=1e-5)


def test_structured_activation_criterion_uses_the_data(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=64, hidden=128, n_out=10)
    x = np.random.default_rng(6).standard_normal((64, 64)).astype(np.float32)
    evald = data_files.npz(tmp_path / "e.npz", x=x)
    params = {"method": "structured", "ratio": 0.25, "criterion": "activation", **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model, eval=evald), params)["report"]
    assert report["layers"][0]["importance"] == "mean |activation|" and report["layers"][0]["units_after"] == 96
    with pytest.raises(EngineError, match="eval"):
        validate(check_and_inspect(str(model)), {}, PruneParams(method="structured", ratio=0.5, criterion="activation"))


def test_structured_with_nothing_prunable_says_why(tmp_path) -> None:
    model = onnx_models.linear(tmp_path / "lin.onnx", np.ones((4, 3)), np.zeros(3))
    with pytest.raises(EngineError) as exc:
        _structured(tmp_path, model, ratio=0.5)
    assert exc.value.code == "nothing_to_prune" and "graph output" in exc.value.detail


def _redundant_mlp(path: Path) -> Path:
    """32 -> 64 -> 5 where hidden neurons 0-31 have tiny weights: they are the least important and matter little."""
    rng = np.random.default_rng(8)
    w1 = rng.standard_normal((32, 64)).astype(np.float32)
    w1[:, :32] *= 0.001
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
    ]
    inits = {"w1": w1, "b1": np.zeros(64, np.float32), "w2": rng.standard_normal((64, 5)).astype(np.float32),
             "b2": np.zeros(5, np.float32)}  # fmt: skip
    return _model(path, nodes, inits, ["N", 32], ["N", 5])


def test_sensitivity_scan_chooses_ratios_within_the_budget(tmp_path) -> None:
    model = _redundant_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(7).standard_normal((300, 32)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)  # accuracy 1.0 before pruning
    evald = data_files.npz(tmp_path / "e.npz", x=x, y=y)
    params = {"method": "sensitivity", "max_accuracy_drop": 0.02, "drop_mode": "absolute", **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model, eval=evald), params)["report"]
    sv = report["sensitivity"]
    assert sv["metric"] == "accuracy" and sv["original_metric"] == 1.0
    assert [(r["layer"], r["ratio"]) for r in sv["scan"]] == [("fc1", 0.25), ("fc1", 0.5), ("fc1", 0.75)]
    assert [r["within_budget"] for r in sv["scan"]] == [True, True, False]  # the tiny half goes free, not more
    macs = [r["macs_removed"] for r in sv["scan"]]
    assert macs == sorted(macs) and macs[0] > 0
    assert sv["goal_met"] is True and sv["chosen_ratios"] == {"w1": 0.5}
    assert report["layers"][0]["units_after"] == 32 and report["comparison"]["drop"]["absolute"] <= 0.02
    with pytest.raises(EngineError, match="eval"):
        validate(check_and_inspect(str(model)), {}, PruneParams(method="sensitivity"))


def test_sensitivity_scans_a_residual_group_as_one(tmp_path) -> None:
    """conv_a and conv_b are one group (the residual Add): the scan prunes them together, one row per ratio, and
    the chosen ratio applies to both; without labels the budget is the output cosine."""
    model = residual_concat_cnn(tmp_path / "r.onnx", zero=True)
    x = np.random.default_rng(5).standard_normal((32, 3, 8, 8)).astype(np.float32)
    evald = data_files.npz(tmp_path / "e.npz", x=x)
    params = {"method": "sensitivity", "sensitivity_ratios": [0.5], "min_output_cosine": 0.999, **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model, eval=evald), params)["report"]
    scan = {r["layer"]: r for r in report["sensitivity"]["scan"]}
    assert "conv_a (group of 2: with conv_b)" in scan and not any(k.startswith("conv_b") for k in scan), scan
    assert scan["conv_a (group of 2: with conv_b)"]["within_budget"]  # its zeroed channels go: exact
    assert report["sensitivity"]["chosen_ratios"]["wa"] == 0.5
    pruned = {r["layer"]: r["units_after"] for r in report["layers"]}
    assert pruned["conv_a"] == pruned["conv_b"] == 4


def test_sensitivity_with_no_room_leaves_the_model_unchanged_and_says_so(tmp_path) -> None:
    model = _redundant_mlp(tmp_path / "m.onnx")
    x = np.random.default_rng(7).standard_normal((300, 32)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    evald = data_files.npz(tmp_path / "e.npz", x=x, y=y)
    params = {"method": "sensitivity", "sensitivity_ratios": [0.75, 0.9], "max_accuracy_drop": 0.0, **PARAMS}
    report = run_in_child("prune", _inputs(tmp_path, model, eval=evald), params)["report"]
    assert report["sensitivity"]["chosen_ratios"] == {} and report["sensitivity"]["goal_met"] is False
    assert report["parameters"]["pruned"] == report["parameters"]["original"]
    assert any("the model is unchanged" in w for w in report["warnings"])


def test_control_flow_bodies_are_left_untouched(tmp_path) -> None:
    """fc1's output is read by fc2 and, from the outer scope, inside an If's branches: fc1 is left alone."""
    rng = np.random.default_rng(9)
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["r"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["N", 16])],
    )
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2"),
        helper.make_node("If", ["cond"], ["z"], then_branch=branch("then"), else_branch=branch("else"), name="if"),
    ]
    graph = helper.make_graph(
        nodes,
        "cf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 16]),
        ],
        [
            numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    model = tmp_path / "cf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=onnx_models.OPSET, ir_version=8), str(model))
    with pytest.raises(EngineError) as exc:
        _structured(tmp_path, model, ratio=0.5)
    assert exc.value.code == "nothing_to_prune" and "control-flow body" in exc.value.detail
    report = run_in_child("prune", _inputs(tmp_path, model), {"method": "magnitude", "ratio": 0.5, **PARAMS})["report"]
    assert any("control flow (If)" in w for w in report["warnings"])


def test_unknown_exclude_names_are_refused(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx")
    for method in ("magnitude", "structured"):
        with pytest.raises(EngineError) as exc:
            _structured(tmp_path, model, method=method, ratio=0.5, exclude=["fc9"])
        assert exc.value.code == "unknown_layer" and "fc9" in exc.value.detail


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "shufflenet"])
def test_real_architectures_prune_in_dependency_groups(tmp_path, name) -> None:
    """Architectures nobody here designed (onnx's backend test data, random weights at their shapes), structured
    pruning at 0.3: ResNet-50's residual stages go as groups (a BatchNorm-as-Mul+Add DenseNet and ShuffleNet's
    grouped convolutions with channel shuffles are followed, not refused), ONNX Runtime runs the result and the
    output keeps its shape."""
    from engine.pruning.structured import prune_structured

    path = onnx_models.light(name, tmp_path / f"{name}.onnx")
    before = check_and_inspect(str(path))
    model = onnx.load(str(path))
    rows, alone = prune_structured(model, 0.3, None, "l1", set(), set())
    out = tmp_path / "pruned.onnx"
    onnx.save(model, str(out))
    after = check_and_inspect(str(out))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    shapes = [ort.InferenceSession(str(p)).run(None, {before.inputs[0].name: x})[0].shape for p in (path, out)]
    assert shapes[0] == shapes[1]
    ratio = after.parameter_count / before.parameter_count
    sizes = {r["group"]: sum(1 for s in rows if s["group"] == r["group"]) for r in rows}
    if name == "resnet50":
        assert ratio < 0.6 and max(sizes.values()) >= 4 and len(alone) == 1  # only the classifier stays whole
    elif name == "densenet121":
        assert ratio < 0.6 and len(rows) == 120
    else:  # grouped convs, shuffles, the trunk of Concats and Sums: all but the classifier, in equal counts
        assert ratio < 0.75 and len(alone) == 1 and any("shuffle-aligned" in r["importance"] for r in rows)
        assert max(sizes.values()) >= 15  # the trunk: every stage's Concat producers and residual convs


def test_ffn_neurons_prune_through_an_erf_gelu_with_constant_nodes(tmp_path) -> None:
    """A transformer's feed-forward block as PyTorch exports it: MatMul -> Add(bias) -> Gelu spelled with Erf and
    Constant-node scalars (x * 0.5 * (1 + erf(x / sqrt 2))) -> MatMul -> Add(bias) -> Add(residual). The
    intermediate neurons prune (the Gelu's Mul between x and erf(x) is inside their own group); the residual
    stream (the second MatMul's outputs) stays whole. All-zero neurons removed: the output is unchanged."""
    rng = np.random.default_rng(9)
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    w1[:, [2, 5, 9, 11]] = 0.0
    b1[[2, 5, 9, 11]] = 0.0
    inits = {"w1": w1, "b1": b1, "w2": rng.standard_normal((16, 8)).astype(np.float32), "b2": np.zeros(8, np.float32)}

    def const(name: str, value: float) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.array(value, np.float32)))

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="intermediate"),
        helper.make_node("Add", ["b1", "h"], ["hb"], name="bias1"),
        const("sqrt2", 2**0.5), const("one", 1.0), const("half", 0.5),
        helper.make_node("Div", ["hb", "sqrt2"], ["d"], name="gelu_div"),
        helper.make_node("Erf", ["d"], ["e"], name="gelu_erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="gelu_add"),
        helper.make_node("Mul", ["hb", "e1"], ["m"], name="gelu_mul"),
        helper.make_node("Mul", ["m", "half"], ["gelu"], name="gelu_half"),
        helper.make_node("MatMul", ["gelu", "w2"], ["o"], name="output_dense"),
        helper.make_node("Add", ["o", "b2"], ["ob"], name="bias2"),
        helper.make_node("Add", ["ob", "x"], ["y"], name="residual"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ffn.onnx"
    onnx.save(model, str(path))
    report, produced = _structured(tmp_path, path, ratio=0.25)
    assert [r["layer"] for r in report["layers"]] == ["intermediate"], report["left_alone"]
    assert "residual" in {a["layer"]: a["why"] for a in report["left_alone"]}["output_dense"]
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes["w1"] == [8, 12] and shapes["b1"] == [12] and shapes["w2"] == [12, 8]
    x = np.random.default_rng(10).standard_normal((3, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(path, x), rtol=1e-5, atol=1e-5)


def test_attention_heads_prune_whole_and_together(tmp_path) -> None:
    """A self-attention block as PyTorch exports it (query/key/value MatMul + bias -> Reshape [B, S, -1, 2] ->
    Transpose -> scores MatMul -> scale -> Softmax -> context MatMul -> Transpose -> Reshape [B, S, -1] -> output
    MatMul): 4 heads of 2, the second all-zero in query, key and value. Query, key and value form one group that
    loses whole heads (the zero one), the output projection loses the rows that read it: the output is
    unchanged."""
    rng = np.random.default_rng(11)
    w = {n: rng.standard_normal((8, 8)).astype(np.float32) for n in ("wq", "wk", "wv", "wo")}
    b = {n: rng.standard_normal(8).astype(np.float32) for n in ("bq", "bk", "bv")}
    for name in ("wq", "wk", "wv"):
        w[name][:, 2:4] = 0.0
    for name in ("bq", "bk", "bv"):
        b[name][2:4] = 0.0
    inits = {**w, **b, "split": np.array([0, 0, -1, 2], np.int64), "merge": np.array([0, 0, -1], np.int64),
             "scale": np.array(0.7, np.float32)}  # fmt: skip
    nodes = []
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [
            helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_proj"),
            helper.make_node("Add", [f"{p}0", f"b{p}"], [f"{p}1"], name=f"{p}_bias"),
            helper.make_node("Reshape", [f"{p}1", "split"], [f"{p}2"], name=f"{p}_split"),
            helper.make_node("Transpose", [f"{p}2"], [f"{p}3"], perm=perm, name=f"{p}_heads"),
        ]
    nodes += [
        helper.make_node("MatMul", ["q3", "k3"], ["scores"], name="scores"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["probs", "v3"], ["context"], name="context"),
        helper.make_node("Transpose", ["context"], ["ct"], perm=[0, 2, 1, 3], name="unheads"),
        helper.make_node("Reshape", ["ct", "merge"], ["merged"], name="merge"),
        helper.make_node("MatMul", ["merged", "wo"], ["y"], name="out_proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 8])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "attention.onnx"
    onnx.save(model, str(path))
    report, produced = _structured(tmp_path, path, ratio=0.25)
    rows = {r["layer"]: r for r in report["layers"]}
    assert set(rows) == {"q_proj", "k_proj", "v_proj"}, report["left_alone"]
    assert len({r["group"] for r in rows.values()}) == 1 and "whole heads of 2" in rows["q_proj"]["importance"]
    shapes = {t.name: list(t.dims) for t in onnx.load(str(produced)).graph.initializer}
    assert shapes["wq"] == shapes["wk"] == shapes["wv"] == [8, 6] and shapes["bq"] == [6] and shapes["wo"] == [6, 8]
    x = np.random.default_rng(12).standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(_outputs(produced, x), _outputs(path, x), rtol=1e-5, atol=1e-5)
