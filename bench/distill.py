"""Prune, then distill, then quantize: the digits MLP and CNN through the engine's job kinds (the code a job runs).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # torch 2.13.0 (CPU) and scikit-learn
    .venv-bench/bin/python bench/distill.py

For each model and ratio (30/50/70%): a `distill` job with the auto student (the teacher structurally pruned by
the ratio, L1), trained on the 1,257 training images with the 540 test images as validation (early stopping) and
eval; then a static `quantize` job on the distilled student, measured against the original teacher. Reports the
accuracy of the pruned student before and after distillation, parameters, MACs, size, latency at batch 1 and
32 with 1 thread, and wall times.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common, models  # noqa: E402
from tests import data_files  # noqa: E402


def job(kind: str, model: Path, datasets: dict[str, Path], params: dict, work: Path) -> tuple[dict, Path]:
    result = common.job(kind, model, datasets, params, work)
    return result["report"], result["out_dir"] / result["artifacts"][0]["filename"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-distill-"))
    split = models.digits_split()
    train = data_files.npz(work / "train.npz", x=split["x_train"], y=split["y_train"])
    test = data_files.npz(work / "test.npz", x=split["x_test"], y=split["y_test"])
    calib = data_files.npz(work / "calib.npz", x=split["x_train"][:256])
    teachers = {
        "digits MLP": models.digits_mlp(work / "mlp.onnx", split),
        "digits CNN": models.digits_cnn(work / "cnn.onnx", split),
    }
    timing = {"batch_sizes": [1, 32], "runs": 40}
    rows = []
    for name, teacher in teachers.items():
        for ratio in (0.3, 0.5, 0.7):
            params = {"ratio": ratio, "epochs": 30, "patience": 5, "learning_rate": 1e-3, "threads": 1, **timing}
            d, student = job("distill", teacher, {"train": train, "validation": test}, params, work)
            q, quantized = job("quantize", student, {"calibration": calib}, {"mode": "static", **timing}, work)
            c = d["comparison"]
            acc = c["metrics"]["accuracy"]
            lat = {f"b{p['batch_size']}": round(p["speedup_p50"], 2) for p in c["latency_ms"] if p["threads"] == 1}
            qc = q["comparison"]
            row = {
                "model": name,
                "ratio": ratio,
                "teacher_accuracy": round(acc["original"], 4),
                "pruned_accuracy": round(d["before_training"]["value"], 4),
                "distilled_accuracy": round(acc["candidate"], 4),
                "delta_ci95_points": [round(100 * v, 2) for v in acc["delta"]["ci95"]],
                "epochs": d["epochs_run"],
                "best_epoch": d["best_epoch"],
                "training_s": d["training_seconds"],
                "params": f"{d['parameters']['teacher']} -> {d['parameters']['student']}",
                "macs": f"{d['macs_per_sample']['teacher']} -> {d['macs_per_sample']['student']}",
                "size_ratio": round(c["size_bytes"]["ratio"], 3),
                "speedup_1t": lat,
                "quantized_size_vs_teacher": round(qc["size_bytes"]["candidate"] / c["size_bytes"]["original"], 3),
                "quantized_speedup_vs_student_1t": {
                    f"b{p['batch_size']}": round(p["speedup_p50"], 2) for p in qc["latency_ms"] if p["threads"] == 1
                },
            }
            evaluated, _ = job("evaluate", quantized, {"eval": test}, {}, work)  # the chain's end product
            row["chain_accuracy"] = round(evaluated["metrics"]["accuracy"], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = ["model", "ratio", "accuracy: teacher / pruned / distilled (95% CI of the change, pt)", "epochs (best)"]
    header += [
        "training s",
        "parameters",
        "MACs",
        "size",
        "speed-up b1 / b32 (1t)",
        "+ int8: size vs teacher, accuracy",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        lo, hi = r["delta_ci95_points"]
        cells = [
            r["model"],
            f"{int(r['ratio'] * 100)}%",
            f"{r['teacher_accuracy']} / {r['pruned_accuracy']} / {r['distilled_accuracy']} ({lo:+.2f}, {hi:+.2f})",
            f"{r['epochs']} ({r['best_epoch']})",
            str(r["training_s"]),
            r["params"],
            r["macs"],
            f"{r['size_ratio']}x",
            f"{r['speedup_1t']['b1']}x / {r['speedup_1t']['b32']}x",
            f"{r['quantized_size_vs_teacher']}x, {r['chain_accuracy']}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
