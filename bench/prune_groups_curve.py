"""Ratio to accuracy: structured pruning + distillation with dependency groups (coupled layers pruned together) vs
layer by layer (coupled layers left whole, as before issue 19), on the digits CNN (no coupled layers: the two
modes must agree) and a small residual CNN trained here on digits, through the `distill` job (student: the
original structurally pruned at the ratio).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
    .venv-bench/bin/python bench/prune_groups_curve.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common, models  # noqa: E402
from tests import data_files  # noqa: E402

RATIOS = (0.2, 0.4, 0.6)


def residual_cnn(path: Path, split: dict) -> Path:
    """1x8x8 -> Conv 32 + BN + ReLU -> 2 residual blocks (32) -> Conv 64 stride 2 + BN + ReLU -> 1 residual block
    (64) -> global average pool -> Linear 10; trained 15 epochs with Adam, exported by PyTorch."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
            self.na, self.nb = nn.BatchNorm2d(c), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.nb(self.b(torch.relu(self.na(self.a(x))))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
            self.s1 = nn.Sequential(Block(32), Block(32))
            self.down = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())
            self.s2 = Block(64)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.s2(self.down(self.s1(self.stem(x.reshape(-1, 1, 8, 8)))))
            return self.fc(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Net()
    models.train(net, split["x_train"], split["y_train"], epochs=15)
    net.eval()
    example = torch.from_numpy(split["x_test"][:2])
    with torch.no_grad():
        torch.onnx.export(net, (example,), str(path), input_names=["x"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, dynamo=False)  # fmt: skip
    return path


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-curve-"))
    split = models.digits_split()
    train = data_files.npz(work / "train.npz", x=split["x_train"], y=split["y_train"])
    test = data_files.npz(work / "test.npz", x=split["x_test"], y=split["y_test"])
    nets = {
        "digits CNN": models.digits_cnn(work / "cnn.onnx", split),
        "residual CNN": residual_cnn(work / "res.onnx", split),
    }
    print("| model | ratio | coupled | parameters | pruned / left whole | after pruning | after distill | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model in nets.items():
        for ratio in RATIOS:
            for coupled in ("group", "leave"):
                params = {"ratio": ratio, "coupled": coupled, "epochs": 15, "learning_rate": 1e-3, "patience": 4,
                          "runs": 5, "batch_sizes": [1], "alpha": 0.5}  # fmt: skip
                started = time.perf_counter()
                r = common.job("distill", model, {"train": train, "validation": test, "eval": test}, params, work)
                report = r["report"]
                seconds = time.perf_counter() - started
                p = report["parameters"]
                acc = report["comparison"]["metrics"]["accuracy"]
                before = report["before_training"]["value"]
                layers = f"{len(report['student']['pruned_layers'])} / {len(report['student']['left_alone'])}"
                after = f"{acc['candidate']:.4f} (original {acc['original']:.4f})"
                cells = [name, ratio, coupled, f"{p['student'] / p['teacher']:.3f}x", layers, f"{before:.4f}", after]
                cells.append(f"{seconds:.0f}")
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
