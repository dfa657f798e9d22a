"""Prune + distill a trained BERT-style encoder (issue 19): attention heads and FFN neurons pruned in dependency
groups, then the student distilled from the original, through the `prune` and `distill` job kinds (the code a
worker runs).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'
    .venv-bench/bin/python bench/prune_distill_encoder.py [--ratio 0.3]

The encoder is a transformers BertForSequenceClassification built from a config (2 layers, hidden 128, 4 heads,
FFN 512), trained here with PyTorch on a synthetic sequence task made offline: 16 tokens drawn from 100, the label
says whether more than half of them come from the lower half of the vocabulary (attention has to count). Train
4,000 / validation 1,000 / test 1,000 sequences, some padded (the attention mask matters).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests import data_files  # noqa: E402

SEQ, VOCAB = 16, 105


def task(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (n, SEQ)).astype(np.int64)
    lengths = rng.integers(10, SEQ + 1, n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    low = ((ids >= 5) & (ids < 55) & (mask == 1)).sum(axis=1)
    return {"input_ids": ids, "attention_mask": mask, "y": (2 * low > lengths).astype(np.int64)}


def train_encoder(path: Path, data: dict[str, np.ndarray], epochs: int = 12) -> float:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=32, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config)
    model.config._attn_implementation = "eager"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids, mask, y = (torch.from_numpy(data[k]) for k in ("input_ids", "attention_mask", "y"))
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            out = model(input_ids=ids[idx], attention_mask=mask[idx], labels=y[idx])
            out.loss.backward()
            opt.step()
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    with torch.no_grad():
        axes = {"input_ids": {0: "b"}, "attention_mask": {0: "b"}, "logits": {0: "b"}}
        torch.onnx.export(Logits(), (ids[:2], mask[:2]), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False, dynamic_axes=axes)  # fmt: skip
    return path


def main() -> None:
    ratio = float(sys.argv[sys.argv.index("--ratio") + 1]) if "--ratio" in sys.argv else 0.3
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-encoder-"))
    split = {"train": task(4000, 0), "validation": task(1000, 1), "test": task(1000, 2)}
    files = {role: data_files.npz(work / f"{role}.npz", **arrays) for role, arrays in split.items()}
    started = time.perf_counter()
    teacher = train_encoder(work / "encoder.onnx", split["train"])
    trained = time.perf_counter() - started
    prune_params = {"method": "structured", "ratio": ratio, "runs": 10, "batch_sizes": [1]}
    prune = common.job("prune", teacher, {"eval": files["test"]}, prune_params, work)["report"]
    distill_params = {"ratio": ratio, "epochs": 15, "learning_rate": 1e-3, "patience": 4, "runs": 10,
                      "batch_sizes": [1], "alpha": 0.5}  # fmt: skip
    datasets = {"train": files["train"], "validation": files["validation"], "eval": files["test"]}
    distill = common.job("distill", teacher, datasets, distill_params, work)["report"]
    cmp_p, cmp_d = prune["comparison"], distill["comparison"]
    row = {
        "ratio": ratio,
        "teacher_training_seconds": round(trained, 1),
        "teacher_accuracy": cmp_d["metrics"]["accuracy"]["original"],
        "pruned_accuracy": cmp_p["metrics"]["accuracy"]["candidate"],
        "distilled_accuracy": cmp_d["metrics"]["accuracy"]["candidate"],
        "distilled_change_ci95": cmp_d["metrics"]["accuracy"]["delta"],
        "parameters": distill["parameters"],
        "pruned_layers": [
            (r["layer"].split("/")[-2] if "/" in r["layer"] else r["layer"], r["units_before"], r["units_after"])
            for r in distill["student"]["pruned_layers"]
        ],  # fmt: skip
        "epochs_run": distill["epochs_run"],
        "distill_seconds": distill["training_seconds"],
        "speedup_p50": {f"b{p['batch_size']} t{p['threads']}": round(p["speedup_p50"], 2) for p in cmp_d["latency_ms"]},
        "size_ratio": cmp_d["size_bytes"].get("ratio"),
    }
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
