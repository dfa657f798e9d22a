"""Structured pruning with dependency groups on real architectures (issue 19): the convolutional models of the onnx
package's backend test data (onnx/backend/test/data/light/, random weights at their shapes: tests.onnx_models.light)
and a MobileNetV2-like network built with PyTorch, pruned by the engine's structured pruning (L1, one ratio for every
group), checked by ONNX Runtime (runs, same output shape) and counted (parameters, MACs).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
    .venv-bench/bin/python bench/prune_groups.py [--ratio 0.3] [--only NAME]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.inspect import check_and_inspect  # noqa: E402
from engine.pruning.structured import prune_structured  # noqa: E402
from tests import onnx_models  # noqa: E402


def mobilenet_v2_like(path: Path) -> Path:
    """Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection, a residual Add where the shape
    allows) at 64x64, exported by PyTorch."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int, expand: int) -> nn.Module:
        hidden = cin * expand
        layers = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip

        class Inverted(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layers, self.residual = layers, stride == 1 and cin == cout

            def forward(self, x):
                return x + self.layers(x) if self.residual else self.layers(x)

        return Inverted()

    torch.manual_seed(0)
    spec = [(32, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 32, 2, 6), (32, 32, 1, 6), (32, 32, 1, 6),
            (32, 64, 2, 6), (64, 64, 1, 6), (64, 64, 1, 6), (64, 96, 1, 6), (96, 96, 1, 6)]  # fmt: skip
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        *[block(*s) for s in spec],
        nn.Conv2d(96, 320, 1, bias=False), nn.BatchNorm2d(320), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(320, 10),
    ).eval()  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)  # fmt: skip
    return path


def run(name: str, model: Path, ratio: float, work: Path) -> dict:
    info = check_and_inspect(str(model))
    pruned = onnx.load(str(model))
    started = time.perf_counter()
    rows, alone = prune_structured(pruned, ratio, None, "l1", set(), set())
    seconds = time.perf_counter() - started
    out = work / f"{name}.pruned.onnx"
    onnx.save(pruned, str(out))
    after = check_and_inspect(str(out))
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (model, out)]
    spec = sessions[0].get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in spec.shape])
    shapes = [s.run(None, {spec.name: x.astype(np.float32)})[0].shape for s in sessions]
    groups = Counter(r["group"] for r in rows)
    reasons = Counter(a["why"].split(" (with ")[0][:80] for a in alone)
    return {
        "model": name,
        "parameters": after.parameter_count / info.parameter_count,
        "macs": (after.macs_per_sample or 0) / (info.macs_per_sample or 1),
        "pruned_layers": len(rows),
        "groups": len(groups),
        "largest_group": max(groups.values(), default=0),
        "left_alone": len(alone),
        "same_output_shape": shapes[0] == shapes[1],
        "seconds": round(seconds, 1),
        "reasons": reasons.most_common(3),
    }


def main() -> None:
    ratio = float(sys.argv[sys.argv.index("--ratio") + 1]) if "--ratio" in sys.argv else 0.3
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-groups-"))
    models = {name: lambda n=name: onnx_models.light(n, work / f"{n}.onnx") for name in onnx_models.LIGHT_MODELS}
    models["mobilenet_v2_like (PyTorch)"] = lambda: mobilenet_v2_like(work / "mobilenet.onnx")
    print(f"ratio {ratio}\n")
    print("| model | parameters | MACs | layers pruned | groups (largest) | left alone | same output shape | s |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for name, make in models.items():
        if only not in name:
            continue
        r = run(name.split(" ")[0], make(), ratio, work)
        cells = [name, f"{r['parameters']:.3f}x", f"{r['macs']:.3f}x", r["pruned_layers"]]
        cells += [f"{r['groups']} ({r['largest_group']})", r["left_alone"], r["same_output_shape"], r["seconds"]]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
        notes.append((name, r["reasons"]))
    print("\nWhy layers were left alone (most common reasons, count):")
    for name, reasons in notes:
        print(f"- {name}: " + "; ".join(f"{why} ({n})" for why, n in reasons))


if __name__ == "__main__":
    main()
