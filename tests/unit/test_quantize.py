"""The quantize kind on small models, called the way the sandbox calls it (engine.jobs.run_in_child)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from engine.datasets import inspect_dataset
from engine.errors import EngineError
from engine.inspect import check_and_inspect
from engine.jobs import run_in_child
from engine.quantize import QuantizeParams, validate
from tests import data_files, onnx_models


def _inputs(tmp_path: Path, model: Path, **datasets: Path) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ds = {}
    for role, path in datasets.items():
        summary = inspect_dataset(str(path), "npz", "samples", None)
        ds[role] = {
            "path": str(path),
            "format": "npz",
            "label": summary.label.name if summary.label else None,
            "summary": summary.model_dump(mode="json"),
        }
    return {
        "model_path": str(model),
        "model_info": check_and_inspect(str(model)).model_dump(mode="json"),
        "datasets": ds,
        "out_dir": str(out),
        "max_threads": 2,
    }


@pytest.fixture
def mlp_case(tmp_path):
    """A 256-512-10 MLP (about 0.5 MB of weights) and data labelled by the model itself (fp32 accuracy 1.0)."""
    import onnxruntime as ort

    model = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=256, hidden=512, n_out=10)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 256)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    calib = data_files.npz(tmp_path / "calib.npz", x=x[:200])
    evald = data_files.npz(tmp_path / "eval.npz", x=x[200:], y=y[200:])
    return model, calib, evald


def _initializer_types(path: Path) -> set[int]:
    return {t.data_type for t in onnx.load(str(path)).graph.initializer}


PARAMS = {"runs": 6, "warmup_runs": 1, "batch_sizes": [1, 8]}


def test_static_qdq_u8s8(tmp_path, mlp_case) -> None:
    model, calib, evald = mlp_case
    out = run_in_child(
        "quantize", _inputs(tmp_path, model, calibration=calib, eval=evald), {"mode": "static", **PARAMS}
    )
    report = out["report"]
    produced = tmp_path / "out" / "model.quant.onnx"
    check_and_inspect(str(produced))  # valid and loads in ONNX Runtime
    assert TensorProto.INT8 in _initializer_types(produced)  # the weights really are int8
    assert "DequantizeLinear" in report["output_model"]["info"]["op_histogram"]
    assert report["config"]["activation_type"] == "uint8" and report["config"]["per_channel"] is True
    cmp = report["comparison"]
    assert cmp["size_bytes"]["ratio"] < 0.3
    assert cmp["metrics"]["accuracy"]["original"] == 1.0 and cmp["metrics"]["accuracy"]["candidate"] > 0.9
    lo, hi = cmp["metrics"]["accuracy"]["delta"]["ci95"]
    assert lo <= cmp["metrics"]["accuracy"]["delta"]["value"] <= hi
    fid = cmp["fidelity"][0]
    assert 0.99 < fid["cosine"] <= 1.0 and fid["sqnr_db"] > 20 and fid["top1_agreement"] > 0.9
    assert [(p["batch_size"], p["threads"]) for p in cmp["latency_ms"]] == [(1, 1), (8, 1), (1, 2), (8, 2)]
    assert report["calibration_samples"] == 200 and report["usable"] is True
    assert out["artifacts"][0]["register_as_model"] == "static"
    errors = report["layer_errors"]
    assert errors["samples"] == 8 and errors["activations"] and errors["weights"]
    sqnr = [r["sqnr_db"] for r in errors["activations"]]
    assert sqnr == sorted(sqnr) and all(10 < v < 100 for v in sqnr)  # worst first; int8 keeps ~20-50 dB
    assert {r["weight"] for r in errors["weights"]} == {"w1", "w2"}  # the all-zero biases are exact, not listed


def test_matches_onnxruntime_quantize_static(tmp_path, mlp_case) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model, calib, evald = mlp_case
    run_in_child("quantize", _inputs(tmp_path, model, calibration=calib), {"mode": "static", **PARAMS})
    ours = tmp_path / "out" / "model.quant.onnx"
    x = np.load(calib)["x"]

    class Reader:
        def __init__(self):
            self.it = iter([{"x": x[i : i + 16]} for i in range(0, 200, 16)])

        def get_next(self):
            return next(self.it, None)

    theirs = tmp_path / "ort.onnx"
    quantize_static(
        str(model),
        str(theirs),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibMaxIntermediateOutputs": 8},
    )
    a, b = onnx.load(str(ours)), onnx.load(str(theirs))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    probe = np.load(evald)["x"]
    ra = ort.InferenceSession(str(ours)).run(None, {"x": probe})[0]
    rb = ort.InferenceSession(str(theirs)).run(None, {"x": probe})[0]
    assert np.array_equal(ra, rb)


def test_dynamic_and_fp16(tmp_path, mlp_case) -> None:
    model, _, evald = mlp_case
    dyn = run_in_child("quantize", _inputs(tmp_path, model, eval=evald), {"mode": "dynamic", **PARAMS})["report"]
    ops = dyn["output_model"]["info"]["op_histogram"]
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    assert dyn["comparison"]["metrics"]["accuracy"]["candidate"] > 0.9
    assert dyn["config"]["op_types"] == ["MatMul", "Gemm"]
    half = run_in_child("quantize", _inputs(tmp_path, model, eval=evald), {"mode": "fp16", **PARAMS})["report"]
    assert TensorProto.FLOAT16 in _initializer_types(tmp_path / "out" / "model.quant.onnx")
    assert 0.45 < half["comparison"]["size_bytes"]["ratio"] < 0.55
    assert half["comparison"]["fidelity"][0]["cosine"] > 0.999
    assert any("not faster" in w for w in half["warnings"])


def test_fp16_overflow_is_detected(tmp_path) -> None:
    w = np.full((8, 4), 3000.0)
    model = onnx_models.linear(tmp_path / "big.onnx", w, np.zeros(4))
    evald = data_files.npz(tmp_path / "e.npz", x=np.full((16, 8), 10.0), y=np.zeros(16, dtype=np.int64))
    # With float16 outputs the 240,000 this model computes does not fit (max 65,504): inf, to be caught.
    params = {"mode": "fp16", "keep_io_types": False, **PARAMS}
    report = run_in_child("quantize", _inputs(tmp_path, model, eval=evald), params)["report"]
    assert report["usable"] is False
    assert report["comparison"]["fidelity"][0]["non_finite_values"] > 0
    assert any("inf/NaN" in w for w in report["warnings"])


def test_refusals(tmp_path, mlp_case) -> None:
    model, calib, _ = mlp_case
    info = check_and_inspect(str(model))
    with pytest.raises(EngineError, match="calibration"):
        validate(info, {}, QuantizeParams(mode="static"))
    run_in_child("quantize", _inputs(tmp_path, model), {"mode": "dynamic", **PARAMS})
    quantized = check_and_inspect(str(tmp_path / "out" / "model.quant.onnx"))
    with pytest.raises(EngineError) as exc:
        validate(quantized, {}, QuantizeParams(mode="dynamic"))
    assert exc.value.code == "already_quantized"
    narrow = inspect_dataset(str(data_files.npz(tmp_path / "n.npz", x=np.ones((4, 3)))), "npz", "samples", None)
    with pytest.raises(EngineError) as exc:
        validate(info, {"calibration": narrow}, QuantizeParams(mode="static"))
    assert exc.value.code == "incompatible_data"


def test_too_few_calibration_samples_warn(tmp_path) -> None:
    model = onnx_models.mlp(tmp_path / "m.onnx")
    calib = data_files.npz(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((8, 64)))
    report = run_in_child("quantize", _inputs(tmp_path, model, calibration=calib), {"mode": "static", **PARAMS})
    assert any("only 8 calibration samples" in w for w in report["report"]["warnings"])


def test_calibration_batch_count_that_is_a_multiple_of_the_merge_interval(tmp_path) -> None:
    """256 samples in batches of 16 = 16 batches: ORT used to be left with no data after its last merge."""
    model = onnx_models.mlp(tmp_path / "m.onnx")
    calib = data_files.npz(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((256, 64)))
    report = run_in_child("quantize", _inputs(tmp_path, model, calibration=calib), {"mode": "static", **PARAMS})
    assert report["report"]["calibration_samples"] == 256
