"""Quantization on this machine: every mode and auto's choice on four models (bench/models.py), through the
engine's quantize kind (the code a job runs), each compared with fp32 by the shared comparison block. Run:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # torch, scikit-learn
    .venv-bench/bin/python bench/quantize.py [--models digits_mlp,digits_cnn,resnet18_like,transformer] [--runs 20]

Digits models: calibration on the first 256 training images, metrics on the 540 test images (fixed split).
ResNet-18-like and transformer: random weights, so fidelity only; calibration on 128 and eval on 256 random
normal inputs. Prints one JSON line per result and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common, models  # noqa: E402
from tests import data_files  # noqa: E402

MODES = [
    ("dynamic", {"mode": "dynamic"}),
    ("static U8S8", {"mode": "static"}),
    ("static S8S8", {"mode": "static", "activation_type": "int8"}),
    ("fp16", {"mode": "fp16"}),
    ("auto", {"mode": "auto"}),
]


def cases(work: Path, names: list[str]) -> dict[str, tuple[Path, Path, Path]]:
    out = {}
    rng = np.random.default_rng(1)
    if any(n.startswith("digits") for n in names):
        split = models.digits_split()
        calib = data_files.npz(work / "digits-calib.npz", x=split["x_train"][:256])
        test = data_files.npz(work / "digits-test.npz", x=split["x_test"], y=split["y_test"])
        if "digits_mlp" in names:
            out["digits_mlp"] = (models.digits_mlp(work / "digits_mlp.onnx", split), calib, test)
        if "digits_cnn" in names:
            out["digits_cnn"] = (models.digits_cnn(work / "digits_cnn.onnx", split), calib, test)
    for name, build, shape in (
        ("resnet18_like", models.resnet18_like, (3, 64, 64)),
        ("transformer", models.transformer_encoder, (64, 256)),
    ):
        if name in names:
            calib = data_files.npz(work / f"{name}-calib.npz", x=rng.standard_normal((128, *shape)).astype(np.float32))
            evald = data_files.npz(work / f"{name}-eval.npz", x=rng.standard_normal((256, *shape)).astype(np.float32))
            out[name] = (build(work / f"{name}.onnx"), calib, evald)
    return out


def run(model: Path, calib: Path, evald: Path, params: dict, work: Path, runs: int) -> dict:
    full = {"batch_sizes": [1, 32], "threads": [1, 2], "runs": runs, "warmup_runs": 3, "trial_runs": runs, **params}
    started = time.perf_counter()
    report = common.job("quantize", model, {"calibration": calib, "eval": evald}, full, work, threads=2)["report"]
    wall = time.perf_counter() - started
    c = report["comparison"]
    speed = {f"b{p['batch_size']}/t{p['threads']}": round(p["speedup_p50"], 2) for p in c["latency_ms"]}
    row = {
        "mode": report["mode"],
        "size_ratio": round(c["size_bytes"]["ratio"], 3),
        "speedup_p50": speed,
        "fp32_p50_ms": {
            f"b{p['batch_size']}/t{p['threads']}": round(p["original_ms"]["p50"], 2) for p in c["latency_ms"]
        },
        "cosine": round(c["fidelity"][0]["cosine"], 5),
        "top1_agreement": c["fidelity"][0]["top1_agreement"],
        "quantization_s": report["quantization_seconds"],
        "job_wall_s": round(wall, 1),
    }
    if c.get("metrics"):
        acc = c["metrics"]["accuracy"]
        row["accuracy"] = [round(acc["original"], 4), round(acc["candidate"], 4)]
        row["accuracy_delta_points"] = round(100 * acc["delta"]["value"], 2)
        row["delta_ci95_points"] = [round(100 * v, 2) for v in acc["delta"]["ci95"]]
    if report.get("auto"):
        a = report["auto"]
        row["auto"] = {
            "chosen": a["trials"][a["chosen"]]["name"] if a["chosen"] is not None else "(original kept)",
            "goal": a["goal"],
            "goal_met": a["goal_met"],
            "trials": [
                (t["name"], t["status"], t["metric"] and round(t["metric"], 4), t["speedup"] and round(t["speedup"], 2))
                for t in a["trials"]
            ],
            "stopped_because": a["stopped_because"],
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="digits_mlp,digits_cnn,resnet18_like,transformer")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-qbench-"))
    table = []
    for name, (model, calib, evald) in cases(work, args.models.split(",")).items():
        for label, params in MODES:
            row = run(model, calib, evald, params, work, args.runs)
            print(name, label, json.dumps(row), flush=True)
            table.append((name, label, row))
    print(
        "\n| model | mode | size | speed-up b1/1t | b1/2t | b32/1t | b32/2t | accuracy change (pt) | cosine | "
        "quantize s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label, r in table:
        s = r["speedup_p50"]
        acc = (
            f"{r['accuracy_delta_points']:+.2f} [{r['delta_ci95_points'][0]:+.2f}, {r['delta_ci95_points'][1]:+.2f}]"
            if "accuracy_delta_points" in r
            else "—"
        )
        chosen = f" → {r['auto']['chosen']}" if "auto" in r else ""
        print(
            f"| {name} | {label}{chosen} | {r['size_ratio']:.3f} | {s['b1/t1']}x | {s['b1/t2']}x | {s['b32/t1']}x | "
            f"{s['b32/t2']}x | {acc} | {r['cosine']} | {r['quantization_s']} |"
        )


if __name__ == "__main__":
    main()
