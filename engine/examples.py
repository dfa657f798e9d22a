"""The files the README's walk-throughs use, made on this machine (`onnxsmith example-files DIR`): numpy and onnx
only, plus scikit-learn's digits when scikit-learn is installed (else a synthetic stand-in of the same shape, and
the output says so).

- classifier.onnx + classifier-test.npz: a 3-class linear classifier on 8 features and 300 labeled samples (the
  curl walk-through);
- digits_mlp.onnx + train.npz, val.npz, test.npz + history.json: a 64-256-10 MLP trained here with numpy (Adam,
  mini-batches, a fixed seed) on 1,100/350/347 samples, and its per-epoch Keras-style history (the `optimize` and
  `diagnose` walk-throughs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


@dataclass(frozen=True)
class Examples:
    files: dict[str, Path]
    digits_source: str  # "scikit-learn's digits" or the synthetic stand-in
    digits_test_accuracy: float


def _save(nodes: list, inputs: list, outputs: list, inits: list, name: str, path: Path) -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, name, inputs, outputs, inits), opset_imports=OPSET, producer_name="onnxsmith-examples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _linear_classifier(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    w = rng.normal(size=(8, 3)).astype(np.float32)
    b = rng.normal(scale=0.1, size=3).astype(np.float32)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    logits = x @ w + b + rng.normal(scale=0.8, size=(300, 3))  # labels from a noisy version: not 100% accurate
    y = logits.argmax(axis=1).astype(np.int64)
    model = _save(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
        "classifier",
        folder / "classifier.onnx",
    )
    np.savez(folder / "classifier-test.npz", x=x, y=y)
    return {"classifier.onnx": model, "classifier-test.npz": folder / "classifier-test.npz"}


def _digits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        # 10 classes of 8x8 "images": a class template plus noise, pixel values in [0, 1] like digits / 16
        templates = rng.uniform(size=(10, 64)) ** 3
        y = rng.integers(0, 10, size=1797)
        x = np.clip(templates[y] + rng.normal(scale=0.35, size=(1797, 64)), 0, 1)
        return x.astype(np.float32), y.astype(np.int64), "a synthetic stand-in for digits (scikit-learn not installed)"
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64), "scikit-learn's digits"


def _accuracy_and_loss(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    w1, b1, w2, b2 = params
    logits = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float((logits.argmax(axis=1) == y).mean()), float(-log_p[np.arange(len(y)), y].mean())


def _train_mlp(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, rng: np.random.Generator, epochs: int
) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    """64 -> 256 -> 10, ReLU, softmax cross-entropy, Adam (lr 1e-3), batches of 64."""
    hidden = 256
    params = [
        rng.normal(scale=np.sqrt(2 / 64), size=(64, hidden)).astype(np.float32),
        np.zeros(hidden, np.float32),
        rng.normal(scale=np.sqrt(1 / hidden), size=(hidden, 10)).astype(np.float32),
        np.zeros(10, np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    step = 0
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(x)), max(1, len(x) // 64)):
            xb, yb = x[batch], y[batch]
            w1, b1, w2, b2 = params
            h = xb @ w1 + b1
            hr = np.maximum(h, 0)
            logits = hr @ w2 + b2
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            d_logits = p / len(yb)
            d_h = (d_logits @ w2.T) * (h > 0)
            grads = [xb.T @ d_h, d_h.sum(axis=0), hr.T @ d_logits, d_logits.sum(axis=0)]
            step += 1
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                m_hat, v_hat = m[i] / (1 - 0.9**step), v[i] / (1 - 0.999**step)
                params[i] = (params[i] - 1e-3 * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
        for split, (xs, ys) in (("", (x, y)), ("val_", (xv, yv))):
            acc, loss = _accuracy_and_loss(params, xs, ys)
            history[f"{split}loss"].append(round(loss, 5))
            history[f"{split}accuracy"].append(round(acc, 5))
    return params, history


def _digits_mlp(folder: Path, rng: np.random.Generator, epochs: int) -> tuple[dict[str, Path], str, float]:
    x, y, source = _digits(rng)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    splits = {"train": (x[:1100], y[:1100]), "val": (x[1100:1450], y[1100:1450]), "test": (x[1450:], y[1450:])}
    params, history = _train_mlp(*splits["train"], *splits["val"], rng, epochs)
    w1, b1, w2, b2 = params
    model = _save(
        [
            helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["hr"], name="relu1"),
            helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(a, name)
            for a, name in ((w1, "fc1.weight"), (b1, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias"))
        ],
        "digits_mlp",
        folder / "digits_mlp.onnx",
    )
    files = {"digits_mlp.onnx": model}
    for name, (xs, ys) in splits.items():
        np.savez(folder / f"{name}.npz", x=xs, y=ys)
        files[f"{name}.npz"] = folder / f"{name}.npz"
    (folder / "history.json").write_text(json.dumps(history))
    files["history.json"] = folder / "history.json"
    return files, source, _accuracy_and_loss(params, *splits["test"])[0]


def write_examples(folder: Path, *, seed: int = 0, epochs: int = 30) -> Examples:
    """Write the example files into `folder` (created if needed); existing files of these names are replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = _linear_classifier(folder, rng)
    digits_files, source, accuracy = _digits_mlp(folder, rng, epochs)
    return Examples({**files, **digits_files}, source, accuracy)
