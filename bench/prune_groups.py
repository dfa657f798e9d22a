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


def bert_from_config(path: Path) -> Path:
    """A BERT-style encoder built from a transformers BertConfig (4 layers, hidden 256, 8 heads, FFN 1024, random
    weights), exported by PyTorch like all-MiniLM-L6-v2 (bench/transformers_models.py)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=3000, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                        intermediate_size=1024, max_position_embeddings=128)  # fmt: skip
    bert = BertModel(config, add_pooling_layer=False).eval()
    bert.config._attn_implementation = "eager"

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 3000, (2, 32))
    with torch.no_grad():
        torch.onnx.export(Encoder(), (ids, torch.ones_like(ids)), str(path), opset_version=17, dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                        "last_hidden_state": {0: "b", 1: "s"}})  # fmt: skip
    return path


def _feeds(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    """Random inputs by the signature: images, or token ids with a full mask (batch 1, 32 tokens)."""
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else (32 if i == 1 else 1) for i, d in enumerate(spec.shape)]
        if "int" in spec.type:
            value = 1 if "mask" in spec.name else 5 if "input_ids" in spec.name else 0
            feeds[spec.name] = np.full(shape, value, np.int64)
        else:
            feeds[spec.name] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return feeds


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
    feeds = _feeds(sessions[0])
    shapes = [s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})[0].shape for s in sessions]
    groups = Counter(r["group"] for r in rows)
    reasons = Counter(a["why"].split(" (with ")[0][:80] for a in alone)
    return {
        "model": name,
        "parameters": after.parameter_count / info.parameter_count,
        "macs": (after.macs_per_sample / info.macs_per_sample)
        if info.macs_per_sample and after.macs_per_sample
        else None,
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
    models["bert (transformers BertConfig)"] = lambda: bert_from_config(work / "bert.onnx")

    def minilm() -> Path:
        from bench import transformers_models

        return transformers_models.minilm(work / "minilm.onnx")

    models["all-MiniLM-L6-v2 (real weights)"] = minilm
    print(f"ratio {ratio}\n")
    print("| model | parameters | MACs | layers pruned | groups (largest) | left alone | same output shape | s |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for name, make in models.items():
        if only not in name:
            continue
        r = run(name.split(" ")[0], make(), ratio, work)
        macs = f"{r['macs']:.3f}x" if r["macs"] is not None else "n/a"
        cells = [name, f"{r['parameters']:.3f}x", macs, r["pruned_layers"]]
        cells += [f"{r['groups']} ({r['largest_group']})", r["left_alone"], r["same_output_shape"], r["seconds"]]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
        notes.append((name, r["reasons"]))
    print("\nWhy layers were left alone (most common reasons, count):")
    for name, reasons in notes:
        print(f"- {name}: " + "; ".join(f"{why} ({n})" for why, n in reasons))


if __name__ == "__main__":
    main()
