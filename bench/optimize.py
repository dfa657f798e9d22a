"""The `optimize` job on the digits MLP and CNN and the ResNet-18-like CNN: the front, the winner, wall time.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # torch 2.13.0 (CPU) and scikit-learn
    .venv-bench/bin/python bench/optimize.py [--cases digits_mlp,digits_cnn,resnet18_like]

Digits: trained on 1,257 images, 540 as validation and eval (labels; max 1% relative accuracy drop, objective
latency at batch 1, 1 thread), all methods with ratios 0.3 and 0.5. ResNet-18-like: random weights and random
inputs (no labels, so the constraint is output cosine >= 0.99), no distillation (nothing to learn from random
data), ratio 0.3. Each case is one optimize job run as a worker runs it (engine.run_in_child).
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


def cases(work: Path, names: list[str]) -> dict[str, tuple[Path, dict[str, Path], dict]]:
    out = {}
    if any(n.startswith("digits") for n in names):
        split = models.digits_split()
        train = data_files.npz(work / "train.npz", x=split["x_train"], y=split["y_train"])
        test = data_files.npz(work / "test.npz", x=split["x_test"], y=split["y_test"])
        datasets = {"train": train, "validation": test}
        params = {"ratios": [0.3, 0.5], "runs": 100}
        if "digits_mlp" in names:
            out["digits_mlp"] = (models.digits_mlp(work / "digits_mlp.onnx", split), datasets, params)
        if "digits_cnn" in names:
            out["digits_cnn"] = (models.digits_cnn(work / "digits_cnn.onnx", split), datasets, params)
    if "resnet18_like" in names:
        rng = np.random.default_rng(1)
        calib = data_files.npz(work / "r-calib.npz", x=rng.standard_normal((64, 3, 64, 64)).astype(np.float32))
        evald = data_files.npz(work / "r-eval.npz", x=rng.standard_normal((128, 3, 64, 64)).astype(np.float32))
        params = {"methods": ["simplify", "quantize", "prune"], "ratios": [0.3], "runs": 50}
        out["resnet18_like"] = (
            models.resnet18_like(work / "resnet18_like.onnx"),
            {"calibration": calib, "eval": evald},
            params,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="digits_mlp,digits_cnn,resnet18_like")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-optimize-"))
    results = {}
    for name, (model, datasets, params) in cases(work, args.cases.split(",")).items():
        started = time.perf_counter()
        report = common.job("optimize", model, datasets, params, work)["report"]
        wall = time.perf_counter() - started
        mode = report["goal"]["drop_mode"]
        rows = []
        for t in [report["original"], *report["trials"]]:
            rows.append(
                {
                    "trial": t["index"],
                    "chain": t["name"],
                    "status": t["status"] + (f" ({t['error']['code']})" if t.get("error") else ""),
                    "metric": None if t.get("metric") is None else round(t["metric"], 4),
                    "drop": None if not t.get("drop") else round(t["drop"][mode], 4),
                    "cosine": None if t.get("cosine") is None else round(t["cosine"], 5),
                    "p50_ms": None if t.get("latency_ms") is None else round(t["latency_ms"], 4),
                    "speedup": None if t.get("speedup") is None else round(t["speedup"], 2),
                    "size_ratio": None if t.get("size_ratio") is None else round(t["size_ratio"], 3),
                    "macs": t.get("macs_per_sample"),
                    "front": t.get("pareto"),
                    "meets": t.get("meets"),
                    "seconds": t.get("seconds"),
                }
            )
        results[name] = {
            "goal_met": report["goal_met"],
            "recommended": report["recommended"],
            "chain": report["recommended_chain"],
            "fit": (report.get("fit") or {}).get("verdict"),
            "skipped": report["skipped"],
            "warnings": report["warnings"],
            "wall_seconds": round(wall, 1),
            "trials": rows,
        }
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    print("\n## markdown\n")
    for name, r in results.items():
        print(f"### {name}: recommended trial {r['recommended']} ({' → '.join(r['chain']) or 'the original'}), "
              f"goal met: {r['goal_met']}, fit: {r['fit']}, {r['wall_seconds']} s wall\n")  # fmt: skip
        print("| # | chain | status | metric | drop | cosine | p50 ms | speed-up | size | MACs | front | s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for t in r["trials"]:
            cells = [t["trial"], t["chain"], t["status"], t["metric"], t["drop"], t["cosine"], t["p50_ms"],
                     t["speedup"], t["size_ratio"], t["macs"], "yes" if t["front"] else "", t["seconds"]]  # fmt: skip
            print("| " + " | ".join("—" if c is None else str(c) for c in cells) + " |")
        print()


if __name__ == "__main__":
    main()
