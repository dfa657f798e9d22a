"""Fit-diagnosis corpus with known ground truth, run through the `diagnose` job kind (the code a worker runs).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'       # torch 2.13.0 (CPU) and scikit-learn
    .venv-bench/bin/python bench/diagnose_corpus.py

Regression: polynomials of degree 1 / 2 / 15 fitted by least squares (Chebyshev basis, so the ONNX graph stays
accurate in float32) to noisy quadratic data, y = 2x^2 - 0.5 + N(0, 0.2), x ~ U(-1, 1): the classic under / good /
over fit. Classification on scikit-learn's digits (bench/models.py's fixed split: 1,257 train / 540 validation):
a 2-unit MLP trained one epoch (underfit), a 128-unit MLP with weight decay (good fit), a 2x1024 MLP on 100
training images for 300 epochs without regularization (overfit), and borderline cases whose truth is
"a small gap on little data" (expected: inconclusive, or the clear verdict nearest to the data). Histories are
recorded while training, as Keras JSON for some cases and Lightning CSV for others.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common, models  # noqa: E402
from tests import data_files  # noqa: E402


# -- polynomial regressions -----------------------------------------------------------------------------------
def chebyshev_model(path: Path, coef: np.ndarray) -> Path:
    """y = sum_k coef[k] T_k(x) for x [N, 1], T_k by the recurrence T_k = 2x T_(k-1) - T_(k-2)."""
    nodes, inits = [], {"two": np.array(2.0, np.float32), "one": np.ones((1, 1), np.float32)}
    terms = ["ones", "x"]
    nodes.append(helper.make_node("Mul", ["x", "zero"], ["zeros"]))
    nodes.append(helper.make_node("Add", ["zeros", "one"], ["ones"]))
    inits["zero"] = np.array(0.0, np.float32)
    for k in range(2, len(coef)):
        nodes += [
            helper.make_node("Mul", ["x", terms[k - 1]], [f"xt{k}"]),
            helper.make_node("Mul", [f"xt{k}", "two"], [f"xt2{k}"]),
            helper.make_node("Sub", [f"xt2{k}", terms[k - 2]], [f"t{k}"]),
        ]
        terms.append(f"t{k}")
    nodes.append(helper.make_node("Concat", terms[: len(coef)], ["basis"], axis=1))
    inits["coef"] = coef.reshape(-1, 1).astype(np.float32)
    nodes.append(helper.make_node("MatMul", ["basis", "coef"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chebyshev",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def polynomial_cases(work: Path) -> list[dict]:
    rng = np.random.default_rng(0)

    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-1, 1, n)
        return x, 2 * x**2 - 0.5 + rng.normal(0, 0.2, n)

    cases = []
    for degree, n_train, truth in ((1, 200, "underfit"), (2, 200, "good_fit"), (15, 40, "overfit")):
        x_tr, y_tr = data(n_train)
        x_va, y_va = data(200)
        coef = np.polynomial.chebyshev.chebfit(x_tr, y_tr, degree)
        model = chebyshev_model(work / f"poly{degree}.onnx", coef)
        train = data_files.npz(work / f"poly{degree}-train.npz", x=x_tr[:, None].astype(np.float32), y=y_tr[:, None])
        val = data_files.npz(work / f"poly{degree}-val.npz", x=x_va[:, None].astype(np.float32), y=y_va[:, None])
        cases.append({"name": f"polynomial degree {degree}, {n_train} train points", "truth": truth, "model": model,
                      "train": train, "validation": val})  # fmt: skip
    return cases


# -- digits classifiers ---------------------------------------------------------------------------------------
def train_mlp(split, sizes, epochs, n_train, weight_decay, lr, seed=0):
    """A ReLU MLP trained with Adam; returns the network and a per-epoch history (train/val loss and accuracy)."""
    import torch

    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    validation = (split["x_test"], split["y_test"])
    x, y = split["x_train"][:n_train], split["y_train"][:n_train]
    history = models.train(net, x, y, epochs, seed=seed, lr=lr, weight_decay=weight_decay, validation=validation)
    return net, history


def write_history(history: dict, path: Path, shape: str) -> Path:
    if shape == "keras":
        path.write_text(json.dumps(history))
        return path
    lines = ["epoch,step,train_loss,train_acc,val_loss,val_acc"]
    for e in range(len(history["loss"])):
        lines.append(f"{e},{e},{history['loss'][e]},{history['accuracy'][e]},,")
        lines.append(f"{e},{e},,,{history['val_loss'][e]},{history['val_accuracy'][e]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def digits_cases(work: Path) -> list[dict]:
    split = models.digits_split()
    specs = [
        ("2-unit MLP, 1 epoch, lr 1e-3", "underfit", [64, 2, 10], 1, 1257, 0.0, 1e-3, "keras"),
        ("128-unit MLP, weight decay 1e-4, 30 epochs", "good_fit", [64, 128, 10], 30, 1257, 1e-4, 1e-3, "lightning"),
        ("2x1024 MLP, 100 training images, 300 epochs", "overfit", [64, 1024, 1024, 10], 300, 100, 0.0, 1e-3, "keras"),
        (
            "2x1024 MLP, 400 training images, 100 epochs",
            "borderline",
            [64, 1024, 1024, 10],
            100,
            400,
            0.0,
            1e-3,
            "lightning",
        ),
        ("32-unit MLP, 600 images, 40 epochs, 60 val", "borderline", [64, 32, 10], 40, 600, 0.0, 1e-3, "keras"),
    ]
    cases = []
    x_tr, y_tr = split["x_train"], split["y_train"]
    for i, (name, truth, sizes, epochs, n_train, wd, lr, shape) in enumerate(specs):
        net, history = train_mlp(split, sizes, epochs, n_train, wd, lr)
        model = models.mlp_to_onnx(net, work / f"digits{i}.onnx")
        n_val = 60 if "60 val" in name else len(split["x_test"])
        train = data_files.npz(work / f"digits{i}-train.npz", x=x_tr[:n_train], y=y_tr[:n_train])
        val = data_files.npz(work / f"digits{i}-val.npz", x=split["x_test"][:n_val], y=split["y_test"][:n_val])
        hist = write_history(history, work / f"digits{i}-history.{'json' if shape == 'keras' else 'csv'}", shape)
        cases.append({"name": f"digits: {name}", "truth": truth, "model": model, "train": train, "validation": val,
                      "history": hist})  # fmt: skip
    return cases


def diagnose(case: dict, work: Path) -> dict:
    datasets = {role: case[role] for role in ("train", "validation", "history") if role in case}
    return common.job("diagnose", case["model"], datasets, {}, work)["report"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-diag-"))
    cases = polynomial_cases(work) + digits_cases(work)
    rows = []
    for case in cases:
        r = diagnose(case, work)
        tr, va = r["splits"]["train"], r["splits"]["validation"]
        m = r["primary_metric"]
        gap = r["gap"] or {}
        row = {
            "case": case["name"],
            "truth": case["truth"],
            "verdict": r["verdict"],
            "train": round(tr["metrics"][m], 3),
            "validation": round(va["metrics"][m], 3),
            "relative_gap": gap.get("relative") and round(gap["relative"], 3),
            "gap_ci95": gap.get("relative_ci95") and [round(v, 3) for v in gap["relative_ci95"]],
            "gain_val": va["gain"] and round(va["gain"], 3),
            "history": r["history"]
            and {k: r["history"][k] for k in ("best_epoch", "stopped_epoch", "overfit_onset_epoch", "still_improving")},
            "remedies": [x["action"] for x in r["remedies"]],
            "alphas": {w["layer"]: round(w["alpha"], 2) for w in r["weights"] or [] if w.get("status") == "fitted"},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    labels = ["overfit", "underfit", "good_fit", "inconclusive"]
    truths = ["overfit", "underfit", "good_fit", "borderline"]
    print("\n| truth \\ verdict | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for t in truths:
        counts = [sum(1 for r in rows if r["truth"] == t and r["verdict"] == v) for v in labels]
        print(f"| {t} | " + " | ".join(str(c) for c in counts) + " |")
    print("\n| case | truth | verdict | metric train / val | relative gap [95% CI] | val gain | history |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        h = r["history"] or {}
        hist = "—"
        if h:
            hist = f"best {h['best_epoch']}, onset {h['overfit_onset_epoch']}, still falling {h['still_improving']}"
        cells = [r["case"], r["truth"], f"**{r['verdict']}**", f"{r['train']} / {r['validation']}"]
        cells += [f"{r['relative_gap']} {r['gap_ci95']}", str(r["gain_val"]), hist]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
