"""scikit-learn's digits (shipped inside the package) and a small MLP trained on them, as ONNX: real data and a
real model for the jobs that compress and must keep accuracy (optimize, the SDK and CLI tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests import data_files


def split(seed: int = 0) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return {"x_train": x[:1100], "y_train": y[:1100], "x_val": x[1100:1450], "y_val": y[1100:1450],
            "x_test": x[1450:], "y_test": y[1450:]}  # fmt: skip


def mlp(path: Path, d: dict[str, np.ndarray], hidden: int = 256, **training: float) -> Path:
    """64 -> hidden -> 10 (ReLU), trained by scikit-learn's MLPClassifier, as Gemm/Relu/Gemm (logits out).
    `training`: MLPClassifier settings that replace the defaults (max_iter 60), e.g. a tiny learning rate."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), **{"max_iter": 60, "random_state": 0, **training})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(d["x_train"], d["y_train"])
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    inits = [
        numpy_helper.from_array(a.astype(np.float32), name)
        for a, name in ((w1, "fc1.weight"), (b1, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias"))
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu1"),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxsmith-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def files(folder: Path, hidden: int = 256) -> dict[str, Path]:
    """model, train, validation, test files in `folder`."""
    d = split()
    return {
        "model": mlp(folder / "digits_mlp.onnx", d, hidden),
        "train": data_files.npz(folder / "train.npz", x=d["x_train"], y=d["y_train"]),
        "validation": data_files.npz(folder / "val.npz", x=d["x_val"], y=d["y_val"]),
        "test": data_files.npz(folder / "test.npz", x=d["x_test"], y=d["y_test"]),
    }
