"""Quantization on this machine: every mode on a conv stack and an MLP, through the engine's quantize kind
(the same code a job runs), compared with fp32 by the shared comparison block. Run:

    .venv/bin/python bench/quantize.py

The conv stack: 8 Conv 3x3 (64 channels, ReLU) on 3x32x32 inputs, then global average pooling and a 64->10 Gemm,
random weights (He init). It is ResNet-like in its op mix, not a ResNet (no residual adds, no BatchNorm).
Random weights mean fidelity is reported, accuracy is not. Calibration: 64 random samples.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.datasets import inspect_dataset  # noqa: E402
from engine.inspect import check_and_inspect  # noqa: E402
from engine.jobs import run_in_child  # noqa: E402
from tests import data_files, onnx_models  # noqa: E402


def conv_stack(path: Path, layers: int = 8, ch: int = 64, hw: int = 32) -> Path:
    rng = np.random.default_rng(0)
    inits, nodes, prev, cin = [], [], "x", 3
    for i in range(layers):
        w = (rng.standard_normal((ch, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(ch, np.float32), f"b{i}")]
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev, cin = f"r{i}", ch
    fc = rng.standard_normal((ch, 10)).astype(np.float32) * 0.1
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "convstack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run(model: Path, calib: Path, mode: str, extra: dict, work: Path) -> dict:
    out = work / f"out-{model.stem}-{mode}-{len(extra)}-{sorted(extra.items())!s:.40}".replace(" ", "")
    out.mkdir()
    summary = inspect_dataset(str(calib), "npz", "samples", None).model_dump(mode="json")
    ds = {"path": str(calib), "format": "npz", "label": None, "summary": summary}
    inputs = {
        "model_path": str(model),
        "model_info": check_and_inspect(str(model)).model_dump(mode="json"),
        "datasets": {"calibration": ds},
        "out_dir": str(out),
        "max_threads": 2,
    }
    params = {"mode": mode, "batch_sizes": [1, 8], "threads": [1, 2], "runs": 15, "warmup_runs": 3, **extra}
    report = run_in_child("quantize", inputs, params)["report"]
    c = report["comparison"]
    return {
        "mode": mode,
        **extra,
        "size_ratio": round(c["size_bytes"]["ratio"], 3),
        "speedup_p50": {f"b{p['batch_size']}/t{p['threads']}": round(p["speedup_p50"], 2) for p in c["latency_ms"]},
        "fp32_p50_ms": {
            f"b{p['batch_size']}/t{p['threads']}": round(p["original_ms"]["p50"], 2) for p in c["latency_ms"]
        },
        "cosine": round(c["fidelity"][0]["cosine"], 4),
        "quantization_s": report["quantization_seconds"],
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-qbench-"))
    rng = np.random.default_rng(1)
    results = {}
    cases = {
        "conv stack": (conv_stack(work / "conv.onnx"), rng.standard_normal((64, 3, 32, 32)).astype(np.float32)),
        "MLP 256-512-10": (
            onnx_models.mlp(work / "mlp.onnx", n_in=256, hidden=512, n_out=10),
            rng.standard_normal((64, 256)).astype(np.float32),
        ),
    }
    for name, (model, x) in cases.items():
        calib = data_files.npz(work / f"{model.stem}-calib.npz", x=x)
        rows = []
        for mode, extra in [
            ("static", {}),
            ("static", {"activation_type": "int8"}),
            ("dynamic", {}),
            ("dynamic", {"op_types": ["Conv", "MatMul", "Gemm"]}),
            ("fp16", {}),
        ]:
            rows.append(run(model, calib, mode, extra, work))
            print(name, json.dumps(rows[-1]), flush=True)
        results[name] = rows
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
