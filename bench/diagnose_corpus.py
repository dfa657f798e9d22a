"""Fit-diagnosis corpus with known ground truth (issue 18: >= 30 cases), run through the `diagnose` job kind (the
code a worker runs).

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'   # torch (CPU), scikit-learn, skl2onnx
    .venv-bench/bin/python bench/diagnose_corpus.py [--only WORD] [--learning-curve]
    .venv-bench/bin/python bench/diagnose_corpus.py --curve-timing     # the learning curve on the 331k digits MLP

Every case is made so its fit is known from how it was made; "borderline" cases are made to be undecidable from
their data (the same data twice, a tiny validation set, a gap at the threshold with a wide interval) and must
come out `inconclusive`. "Never wrong": a clear case is right or `inconclusive`, never the opposite or `good_fit`.

Families: polynomial regressions (Chebyshev least squares exported by hand, so the graph stays accurate in
float32) of degree 0-15 on y = 2x^2 - 0.5 + noise, including a degree-15 fit on 20 points and heavy-tailed
outliers; PyTorch MLPs on scikit-learn's digits (bench/models.py's fixed split: 1,257 train / 540 validation)
with their training histories (Keras JSON or Lightning CSV): a 10-class model at ~27% with losses still falling,
a 2-unit bottleneck on a plateau, overfitting visible only in the history; class imbalance (digits "is it a 9?",
10% positives: accuracy looks fine, macro-F1 does not); scikit-learn models exported with skl2onnx (ai.onnx.ml
operators, ZipMap outputs): pipelines, linear models, decision trees, random forests, k-NN, gradient boosting.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
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
    """Chebyshev least-squares fits of y = 2x^2 - 0.5 + noise, x ~ U(-1, 1) (validation: `n_val` points)."""

    def data(rng: np.random.Generator, n: int, noise: str, span: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-span, span, n)
        eps = rng.normal(0, 0.2, n) if noise == "normal" else 0.2 * rng.standard_t(1.5, n)  # t(1.5): outliers
        return x, 2 * x**2 - 0.5 + eps

    specs = [  # name, truth, degree, train points, validation points, noise, validation span, seed
        ("degree 1, 200 points", "underfit", 1, 200, 200, "normal", 1.0, 0),
        ("degree 0 (the mean), 200 points", "underfit", 0, 200, 200, "normal", 1.0, 1),
        ("degree 2, 200 points", "good_fit", 2, 200, 200, "normal", 1.0, 0),
        ("degree 2, 1,000 points", "good_fit", 2, 1000, 1000, "normal", 1.0, 2),
        ("degree 3, 1,000 points", "good_fit", 3, 1000, 1000, "normal", 1.0, 3),
        ("degree 15, 40 points", "overfit", 15, 40, 200, "normal", 1.0, 0),
        ("degree 15, 20 points (issue 18, class 2)", "overfit", 15, 20, 200, "normal", 1.0, 4),
        ("degree 15, 20 points, validation 5% wider (extrapolation)", "overfit", 15, 20, 200, "normal", 1.05, 5),
        ("degree 2, 1,000 points, t(1.5) outliers", "good_fit", 2, 1000, 1000, "outliers", 1.0, 6),
        ("degree 12, 40 points, t(1.5) outliers", "overfit", 12, 40, 400, "outliers", 1.0, 7),
        ("degree 1, 1,000 points, t(1.5) outliers", "underfit", 1, 1000, 1000, "outliers", 1.0, 8),
    ]
    cases = []
    for i, (name, truth, degree, n_train, n_val, noise, span, seed) in enumerate(specs):
        rng = np.random.default_rng(seed)
        x_tr, y_tr = data(rng, n_train, noise)
        x_va, y_va = data(rng, n_val, noise, span)
        coef = np.polynomial.chebyshev.chebfit(x_tr, y_tr, degree) if degree else np.array([y_tr.mean(), 0.0])
        model = chebyshev_model(work / f"poly{i}.onnx", coef)
        train = data_files.npz(work / f"poly{i}-train.npz", x=x_tr[:, None].astype(np.float32), y=y_tr[:, None])
        val = data_files.npz(work / f"poly{i}-val.npz", x=x_va[:, None].astype(np.float32), y=y_va[:, None])
        cases.append({"family": "polynomial", "name": f"polynomial {name}", "truth": truth, "model": model,
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
    specs = [  # name, truth, layer sizes, epochs, train images, weight decay, lr, history format
        ("2-unit MLP, 1 epoch, lr 1e-3", "underfit", [64, 2, 10], 1, 1257, 0.0, 1e-3, "keras"),
        ("16-unit MLP, 30 epochs at lr 2e-5: ~27%, still falling (issue 18, class 1)", "underfit", [64, 16, 10], 30,
         1257, 0.0, 2e-5, "keras"),
        ("the same, no history", "underfit", [64, 16, 10], 30, 1257, 0.0, 2e-5, None),
        ("2-unit bottleneck, 100 epochs: a plateau at ~27%", "underfit", [64, 2, 10], 100, 1257, 0.0, 1e-3,
         "lightning"),
        ("128-unit MLP, weight decay 1e-4, 30 epochs", "good_fit", [64, 128, 10], 30, 1257, 1e-4, 1e-3, "lightning"),
        ("64-unit MLP, 40 epochs, no history", "good_fit", [64, 64, 10], 40, 1257, 1e-4, 1e-3, None),
        ("2x1024 MLP, 100 training images, 300 epochs", "overfit", [64, 1024, 1024, 10], 300, 100, 0.0, 1e-3, "keras"),
        ("2x256 MLP, 300 images, 150 epochs: overfitting seen in the history (val loss rising)", "overfit",
         [64, 256, 256, 10], 150, 300, 0.0, 1e-3, "keras"),
        ("2x1024 MLP, 400 training images, 100 epochs, no regularization: trained 4x past its best epoch", "overfit",
         [64, 1024, 1024, 10], 100, 400, 0.0, 1e-3, "lightning"),
        ("32-unit MLP, 600 images, 40 epochs, 60 val", "borderline", [64, 32, 10], 40, 600, 0.0, 1e-3, "keras"),
        ("32-unit MLP, 600 images, 40 epochs, 15 val", "borderline", [64, 32, 10], 40, 600, 0.0, 1e-3, None),
    ]  # fmt: skip
    cases = []
    x_tr, y_tr = split["x_train"], split["y_train"]
    for i, (name, truth, sizes, epochs, n_train, wd, lr, shape) in enumerate(specs):
        net, history = train_mlp(split, sizes, epochs, n_train, wd, lr)
        model = models.mlp_to_onnx(net, work / f"digits{i}.onnx")
        n_val = int(name.split(" val")[0].split()[-1]) if name.endswith(" val") else len(split["x_test"])
        train = data_files.npz(work / f"digits{i}-train.npz", x=x_tr[:n_train], y=y_tr[:n_train])
        val = data_files.npz(work / f"digits{i}-val.npz", x=split["x_test"][:n_val], y=split["y_test"][:n_val])
        case = {"family": "digits MLP", "name": f"digits: {name}", "truth": truth, "model": model, "train": train,
                "validation": val}  # fmt: skip
        if shape is not None:
            case["history"] = write_history(
                history, work / f"digits{i}-history.{'json' if shape == 'keras' else 'csv'}", shape
            )
        cases.append(case)
    same = dict(cases[4], name="digits: 128-unit MLP, validation = the train data", truth="borderline")
    same["validation"] = same["train"]
    return cases + [same]


# -- scikit-learn models through skl2onnx (ai.onnx.ml operators, ZipMap outputs) --------------------------------
def _skl(model, x: np.ndarray, path: Path, options: dict | None = None) -> Path:
    from skl2onnx import to_onnx

    onnx.save(to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3}), str(path))
    return path


def sklearn_cases(work: Path) -> list[dict]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    split = models.digits_split()
    xd, yd, xdv, ydv = split["x_train"], split["y_train"], split["x_test"], split["y_test"]
    rng = np.random.default_rng(11)
    noisy, noisy_v = yd.copy(), ydv.copy()  # 30% of the labels replaced by random classes, on both splits
    for y in (noisy, noisy_v):
        flip = rng.random(len(y)) < 0.3
        y[flip] = rng.integers(0, 10, int(flip.sum()))
    xc, yc = load_breast_cancer(return_X_y=True)
    xc_tr, xc_va, yc_tr, yc_va = train_test_split(xc.astype(np.float32), yc, test_size=0.4, random_state=0)
    xr = rng.uniform(-1, 1, (4000, 4)).astype(np.float32)
    yr = (np.sin(6 * xr[:, 0]) + 0.5 * xr[:, 1] ** 2 + rng.normal(0, 0.3, 4000)).astype(np.float32)
    reg = (xr[:2000], yr[:2000], xr[2000:], yr[2000:])
    specs = [  # name, truth, estimator, (x_train, y_train, x_val, y_val), regression
        ("breast cancer: StandardScaler + LogisticRegression pipeline", "good_fit",
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), (xc_tr, yc_tr, xc_va, yc_va), False),
        ("breast cancer: RandomForest(100, max_depth 4)", "good_fit",
         RandomForestClassifier(100, max_depth=4, random_state=0), (xc_tr, yc_tr, xc_va, yc_va), False),
        ("digits: LogisticRegression", "good_fit", LogisticRegression(max_iter=2000), (xd, yd, xdv, ydv), False),
        ("digits, 30% label noise: DecisionTree, unlimited depth", "overfit",
         DecisionTreeClassifier(random_state=0), (xd, noisy, xdv, noisy_v), False),
        ("digits, 30% label noise: 1-nearest neighbour", "overfit",
         KNeighborsClassifier(1), (xd, noisy, xdv, noisy_v), False),
        ("digits: DecisionTree, depth 2", "underfit", DecisionTreeClassifier(max_depth=2, random_state=0),
         (xd, yd, xdv, ydv), False),
        ("digits: PCA(1) + LogisticRegression pipeline", "underfit",
         make_pipeline(PCA(1), LogisticRegression(max_iter=2000)), (xd, yd, xdv, ydv), False),
        ("sin(6x) + noise: LinearRegression", "underfit", LinearRegression(), reg, True),
        ("sin(6x) + noise: GradientBoosting(150, depth 2, subsample 0.8)", "good_fit",
         GradientBoostingRegressor(n_estimators=150, max_depth=2, subsample=0.8, random_state=0), reg, True),
        ("sin(6x) + noise: GradientBoosting(500, depth 6): fits the noise", "overfit",
         GradientBoostingRegressor(n_estimators=500, max_depth=6, random_state=0), reg, True),
        ("sin(6x) + noise: DecisionTreeRegressor, unlimited depth", "overfit", DecisionTreeRegressor(random_state=0),
         reg, True),
    ]  # fmt: skip
    cases = []
    for i, (name, truth, estimator, (x_tr, y_tr, x_va, y_va), regression) in enumerate(specs):
        estimator.fit(x_tr, y_tr)
        model = _skl(estimator, x_tr.astype(np.float32), work / f"skl{i}.onnx")
        ys = (y_tr[:, None], y_va[:, None]) if regression else (y_tr, y_va)
        train = data_files.npz(work / f"skl{i}-train.npz", x=x_tr.astype(np.float32), y=ys[0])
        val = data_files.npz(work / f"skl{i}-val.npz", x=x_va.astype(np.float32), y=ys[1])
        cases.append({"family": "scikit-learn (skl2onnx)", "name": name, "truth": truth, "model": model,
                      "train": train, "validation": val})  # fmt: skip
    return cases


def imbalance_cases(work: Path) -> list[dict]:
    """Digits 'is it a 9?' (about 10% positives): a model that (almost) always says no has ~90% accuracy."""
    from sklearn.linear_model import LogisticRegression

    split = models.digits_split()
    x_tr, x_va = split["x_train"], split["x_test"]
    y_tr, y_va = (split["y_train"] == 9).astype(np.int64), (split["y_test"] == 9).astype(np.int64)
    specs = [  # name, truth, C, params
        ("LogisticRegression C=1e-4 (says 'no' to almost everything), accuracy metric", "underfit", 1e-4, {}),
        ("the same, primary metric macro-F1", "underfit", 1e-4, {"primary_metric": "macro_f1"}),
        ("LogisticRegression C=1, primary metric macro-F1", "good_fit", 1.0, {"primary_metric": "macro_f1"}),
    ]
    cases = []
    for i, (name, truth, c, params) in enumerate(specs):
        estimator = LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_tr)
        model = _skl(estimator, x_tr, work / f"imb{i}.onnx", {id(estimator): {"zipmap": False}})
        train = data_files.npz(work / f"imb{i}-train.npz", x=x_tr, y=y_tr)
        val = data_files.npz(work / f"imb{i}-val.npz", x=x_va, y=y_va)
        cases.append({"family": "class imbalance", "name": f"digits 9-vs-rest: {name}", "truth": truth,
                      "model": model, "train": train, "validation": val, "params": params})  # fmt: skip
    return cases


def diagnose(case: dict, work: Path, curve: bool = False) -> dict:
    """The job's report; `curve`: with the data-size learning curve where the model's graph can be re-trained."""
    datasets = {role: case[role] for role in ("train", "validation", "history") if role in case}
    params = dict(case.get("params", {}))
    if curve and case["family"] in ("polynomial", "digits MLP"):
        params["learning_curve"] = True
    return common.job("diagnose", case["model"], datasets, params, work)["report"]


def outcome(truth: str, verdict: str) -> str:
    """right / inconclusive (never wrong) / WRONG; a borderline case is right only when inconclusive."""
    if truth == "borderline":
        return "right" if verdict == "inconclusive" else "WRONG"
    return "right" if verdict == truth else "inconclusive" if verdict == "inconclusive" else "WRONG"


def curve_timing(work: Path) -> None:
    """The learning curve on the benchmarks' digits MLP (64-1024-256-10, 331k parameters, bench/models.py), timed
    as the job runs it: the whole job, the search and each share."""
    split = models.digits_split()
    model = models.digits_mlp(work / "digits_mlp.onnx", split)
    train = data_files.npz(work / "mlp-train.npz", x=split["x_train"], y=split["y_train"])
    val = data_files.npz(work / "mlp-val.npz", x=split["x_test"], y=split["y_test"])
    started = time.perf_counter()
    r = common.job("diagnose", model, {"train": train, "validation": val}, {"learning_curve": True}, work)["report"]
    seconds = time.perf_counter() - started
    lc = r["learning_curve"]
    print(json.dumps({"verdict": r["verdict"], "job_seconds": round(seconds, 1), "recipe": lc["recipe"],
                      "search": lc["search"], "reading": lc["reading"], "text": lc["text"]}, indent=1))  # fmt: skip
    print("\n| share | samples | epochs | train | validation [95% CI] | seconds |\n|---|---|---|---|---|---|")
    for pt in lc["points"]:
        ci = [round(v, 3) for v in pt["validation_ci95"]]
        print(f"| {pt['fraction']:.0%} | {pt['samples']} | {pt['epochs']} | {pt['train']:.4f} | "
              f"{pt['validation']:.4f} {ci} | {pt['seconds']} |")  # fmt: skip


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="onnxsmith-diag-"))
    if "--curve-timing" in sys.argv:
        curve_timing(work)
        return
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    cases = polynomial_cases(work) + digits_cases(work) + sklearn_cases(work) + imbalance_cases(work)
    cases = [c for c in cases if only.lower() in (c["family"] + " " + c["name"]).lower()]
    curve = "--learning-curve" in sys.argv
    rows = []
    for case in cases:
        started = time.perf_counter()
        r = diagnose(case, work, curve)
        seconds = time.perf_counter() - started
        tr, va = r["splits"]["train"], r["splits"]["validation"]
        m = r["primary_metric"]
        gap = r["gap"] or {}
        row = {
            "family": case["family"],
            "case": case["name"],
            "truth": case["truth"],
            "verdict": r["verdict"],
            "outcome": outcome(case["truth"], r["verdict"]),
            "metric": m,
            "train": round(tr["metrics"][m], 3),
            "validation": round(va["metrics"][m], 3),
            "gap_metric": gap.get("metric"),
            "relative_gap": gap.get("relative") and round(gap["relative"], 3),
            "gap_ci95": gap.get("relative_ci95") and [round(v, 3) for v in gap["relative_ci95"]],
            "gain_val": va["gain"] and round(va["gain"], 3),
            "deciding": [e["code"] for e in r["evidence"] if e["points_to"] == r["verdict"]],
            "history": r["history"]
            and {k: r["history"][k] for k in ("best_epoch", "overfit_onset_epoch", "still_improving", "plateaued")},
            "remedies": [x["action"] for x in r["remedies"]],
            "seconds": round(seconds, 1),
            "curve": r.get("learning_curve")
            and {
                "reading": r["learning_curve"]["reading"],
                "validation": [round(p["validation"], 3) for p in r["learning_curve"]["points"]],
                "samples": [p["samples"] for p in r["learning_curve"]["points"]],
                "recipe": {k: r["learning_curve"]["recipe"][k] for k in ("learning_rate", "epochs_at_full_size")},
            },
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    labels = ["overfit", "underfit", "good_fit", "inconclusive"]
    print("\n| truth \\ verdict | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for t in ["overfit", "underfit", "good_fit", "borderline"]:
        counts = [sum(1 for r in rows if r["truth"] == t and r["verdict"] == v) for v in labels]
        print(f"| {t} | " + " | ".join(str(c) for c in counts) + " |")
    wrong = [r["case"] for r in rows if r["outcome"] == "WRONG"]
    right, unsure = (sum(r["outcome"] == o for r in rows) for o in ("right", "inconclusive"))
    print(f"\n{len(rows)} cases, {right} right, {unsure} inconclusive on a clear case, {len(wrong)} wrong {wrong}")
    print("\n| family | case | truth | verdict | metric train / val | gap [95% CI] | val gain | decided by |"
          + (" learning curve (validation by size) | seconds |" if curve else ""))  # fmt: skip
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if curve else ""))
    for r in rows:
        gap = f"{r['relative_gap']} {r['gap_ci95']} ({r['gap_metric']})" if r["gap_metric"] else "—"
        metric = f"{r['metric']} {r['train']} / {r['validation']}"
        cells = [r["family"], r["case"], r["truth"], f"**{r['verdict']}**", metric, gap, str(r["gain_val"])]
        cells.append(", ".join(r["deciding"]))
        if curve:
            c = r["curve"]
            cells.append(f"{c['reading']}: {c['validation']}" if c else "—")
            cells.append(str(r["seconds"]))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
