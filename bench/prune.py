"""Pruning on this machine, through the engine's prune kind (the code a job runs), compared with the original by
the shared comparison block. Run:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # torch 2.13.0 (CPU) and scikit-learn
    .venv-bench/bin/python bench/prune.py

- structured 30% / 50% (L1) and magnitude 50% on the digits MLP and CNN of bench/models.py (trained by the
  script, fixed split; accuracy on the 540 test images, before any fine-tuning);
- simplify on PyTorch exports of a small CNN with BatchNorm and Dropout: torch.onnx.export with the dynamo
  exporter (default) and with the TorchScript exporter without constant folding (do_constant_folding=False).
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


def run(model: Path, evald: Path, params: dict, work: Path) -> dict:
    full = {"batch_sizes": [1, 32], "threads": [1, 2], "runs": 40, "warmup_runs": 5, **params}
    report = common.job("prune", model, {"eval": evald}, full, work, threads=2)["report"]
    c = report["comparison"]
    row = {
        "params": f"{report['parameters']['original']} -> {report['parameters']['pruned']}",
        "nonzero": f"{report['nonzero_parameters']['original']} -> {report['nonzero_parameters']['pruned']}",
        "macs": f"{report['macs_per_sample']['original']} -> {report['macs_per_sample']['pruned']}",
        "size_ratio": round(c["size_bytes"]["ratio"], 3),
        "gzip_ratio": round(report["gzip_size_bytes"]["pruned"] / report["gzip_size_bytes"]["original"], 3),
        "speedup": {f"b{p['batch_size']}/t{p['threads']}": round(p["speedup_p50"], 2) for p in c["latency_ms"]},
        "fp32_p50_ms": {
            f"b{p['batch_size']}/t{p['threads']}": round(p["original_ms"]["p50"], 3) for p in c["latency_ms"]
        },
        "nodes": f"{report['nodes']['original']} -> {report['nodes']['pruned']}",
        "op_changes": report["op_changes"],
        "left_alone": [f"{a['layer']}: {a['why']}" for a in report["left_alone"]],
        "cosine": round(c["fidelity"][0]["cosine"], 5),
    }
    if c.get("metrics"):
        acc = c["metrics"]["accuracy"]
        row["accuracy"] = f"{acc['original']:.4f} -> {acc['candidate']:.4f}"
        row["delta_points"] = round(100 * acc["delta"]["value"], 2)
        row["ci95_points"] = [round(100 * v, 2) for v in acc["delta"]["ci95"]]
    if report.get("max_abs_difference") is not None:
        row["max_abs_difference"] = report["max_abs_difference"]
    return row


def exported_cnns(work: Path) -> dict[str, Path]:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
            self.c2, self.b2 = torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32)
            self.drop = torch.nn.Dropout(0.3)
            self.fc = torch.nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            x = x.reshape(-1, 1, 8, 8)
            x = torch.relu(self.b1(self.c1(x)))
            x = torch.nn.functional.max_pool2d(torch.relu(self.b2(self.c2(x))), 2)
            return self.fc(self.drop(torch.flatten(x, 1)))

    torch.manual_seed(0)
    net = Net()
    for bn in (net.b1, net.b2):  # non-trivial statistics, as after training
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    net.eval()
    example = (torch.randn(2, 64),)
    dynamo = work / "export_dynamo.onnx"
    torch.onnx.export(net, example, str(dynamo), dynamo=True, input_names=["x"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("N")},))  # fmt: skip
    import onnx

    onnx.save(onnx.load(str(dynamo)), str(dynamo), save_as_external_data=False)  # the exporter writes .data files
    script = work / "export_torchscript.onnx"
    torch.onnx.export(net, example, str(script), dynamo=False, do_constant_folding=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})  # fmt: skip
    return {"exported CNN (dynamo exporter)": dynamo, "exported CNN (TorchScript, no constant folding)": script}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-prune-"))
    split = models.digits_split()
    test = data_files.npz(work / "digits-test.npz", x=split["x_test"], y=split["y_test"])
    cases = {
        "digits MLP": models.digits_mlp(work / "mlp.onnx", split),
        "digits CNN": models.digits_cnn(work / "cnn.onnx", split),
    }
    rows = []
    for name, model in cases.items():
        for label, params in (
            ("structured 30%", {"method": "structured", "ratio": 0.3}),
            ("structured 50%", {"method": "structured", "ratio": 0.5}),
            ("magnitude 50%", {"method": "magnitude", "ratio": 0.5}),
        ):
            row = run(model, test, params, work)
            print(name, label, json.dumps(row), flush=True)
            rows.append((name, label, row))
    for name, model in exported_cnns(work).items():
        row = run(model, test, {"method": "simplify"}, work)
        print(name, "simplify", json.dumps(row), flush=True)
        rows.append((name, "simplify", row))
    header = ["model", "method", "parameters (non-zero)", "MACs", "size / gzip", "speed-up b1/1t", "b1/2t", "b32/1t"]
    header += ["b32/2t", "accuracy (change, 95% CI)"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, label, r in rows:
        s = r["speedup"]
        acc = "—"
        if "accuracy" in r:
            lo, hi = r["ci95_points"]
            acc = f"{r['accuracy']} ({r['delta_points']:+.2f} pt [{lo:+.2f}, {hi:+.2f}])"
        cells = [name, label, r["nonzero"], r["macs"], f"{r['size_ratio']} / {r['gzip_ratio']}"]
        cells += [f"{s[k]}x" for k in ("b1/t1", "b1/t2", "b32/t1", "b32/t2")] + [acc]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
