"""The prune kind (simplify, magnitude) on small models, called the way the sandbox calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.datasets import inspect_dataset
from engine.errors import EngineError
from engine.inspect import check_and_inspect
from engine.jobs import run_in_child
from engine.prune import PruneParams, validate
from tests import data_files, onnx_models

PARAMS = {"runs": 5, "warmup_runs": 1, "batch_sizes": [1]}


def _inputs(tmp_path: Path, model: Path, **datasets: Path) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ds = {}
    for role, path in datasets.items():
        summary = inspect_dataset(str(path), "npz", "samples", None)
        label = summary.label.name if summary.label else None
        ds[role] = {"path": str(path), "format": "npz", "label": label, "summary": summary.model_dump(mode="json")}
    return {
        "model_path": str(model),
        "model_info": check_and_inspect(str(model)).model_dump(mode="json"),
        "datasets": ds,
        "out_dir": str(out),
        "max_threads": 1,
    }


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
    for bad in ({"ratio": 1.0}, {"ratio": 0}, {"ratios": {"w1": 1.5}}, {"method": "structured"}):
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
