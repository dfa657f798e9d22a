"""The diagnose kind on cases whose answer is known by construction, called the way the sandbox calls it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.core.errors import EngineError
from engine.kinds.diagnose.weights import esd_alpha
from engine.registry import run_in_child
from engine.select.stopping import replay
from tests import data_files, onnx_models
from tests.job_inputs import job_inputs

N = 300


def _inputs(tmp_path: Path, model: Path, **datasets: Path) -> dict:
    return job_inputs(tmp_path, model, max_threads=1, **datasets)


@pytest.fixture
def linear_classifier(tmp_path):
    """A 20-feature, 5-class linear model; labels are derived from its own predictions plus chosen noise."""
    w = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
    model = onnx_models.linear(tmp_path / "lin.onnx", w, np.zeros(5))

    def split(name: str, n: int, noise: float, seed: int) -> Path:
        r = np.random.default_rng(seed)
        x = r.standard_normal((n, 20)).astype(np.float32)
        y = (x @ w).argmax(axis=1)
        flip = r.random(n) < noise
        y[flip] = r.integers(0, 5, int(flip.sum()))
        return data_files.npz(tmp_path / f"{name}.npz", x=x, y=y)

    return model, split


def _diagnose(tmp_path, model, params=None, **datasets) -> dict:
    return run_in_child("diagnose", _inputs(tmp_path, model, **datasets), {"weights": False, **(params or {})})[
        "report"
    ]


def test_overfit_is_a_significant_gap(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    report = _diagnose(tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", N, 0.5, 2))
    assert report["verdict"] == "overfit" and report["summary"].startswith("Overfit")
    gap = report["gap"]
    assert report["splits"]["train"]["metrics"]["accuracy"] == 1.0
    assert gap["relative"] > 0.3 and gap["relative_ci95"][0] > 0.1 and gap["p_value"] < 1e-6
    assert gap["absolute_ci95"][0] <= gap["absolute"] <= gap["absolute_ci95"][1]
    assert [e["code"] for e in report["evidence"]][0] == "significant_gap"
    actions = [r["action"] for r in report["remedies"]]
    assert any("weight decay" in a for a in actions) and any("dropout" in a for a in actions)
    more_data = next(r for r in report["remedies"] if r["action"] == "more training data")
    assert more_data["setting"]["to_halve_the_gap"] == 4 * N


def test_good_fit_is_a_small_gap_well_above_the_baseline(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    report = _diagnose(tmp_path, model, train=split("train", 2000, 0.05, 1), validation=split("val", 2000, 0.05, 2))
    assert report["verdict"] == "good_fit", report["evidence"]
    assert report["splits"]["validation"]["gain"] > 0.8 and report["remedies"] == []
    m = report["splits"]["validation"]["metrics"]
    assert set(m) == {"accuracy", "macro_f1", "log_loss", "ece"} and 0 <= m["ece"] <= 1
    assert set(report["splits"]["validation"]["per_class_recall"]) == {"0", "1", "2", "3", "4"}


def test_underfit_is_no_gain_over_the_naive_baseline(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    report = _diagnose(tmp_path, model, train=split("train", N, 1.0, 1), validation=split("val", N, 1.0, 2))
    assert report["verdict"] == "underfit", report["evidence"]
    assert report["splits"]["validation"]["gain"] <= 0.1
    baseline = report["splits"]["train"]["baseline_metrics"]["accuracy"]
    assert 0.15 < baseline < 0.3  # the most frequent of 5 random classes
    actions = [r["action"] for r in report["remedies"]]
    assert "more capacity (wider or deeper)" in actions
    features = next(r for r in report["remedies"] if r["action"] == "more or better features")
    assert features["setting"]["polynomial_degree"] == 2 and features["setting"]["input_features"] == 20


def test_too_few_samples_or_the_same_data_is_inconclusive(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    report = _diagnose(tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", 12, 0.15, 2))
    assert report["verdict"] == "inconclusive" and "fewer than 30" in report["summary"], report["evidence"]
    # 12 validation samples, half of them mislabelled: the gap's interval lies wholly above the threshold, so the
    # intervals decide despite the small split (issue 18: "let the intervals decide")
    report = _diagnose(tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", 12, 0.5, 2))
    assert report["verdict"] == "overfit", report["evidence"]
    assert "validation has 12 samples" in next(e["text"] for e in report["evidence"] if e["code"].startswith("few"))
    same = split("same", N, 0.1, 3)
    report = _diagnose(tmp_path, model, train=same, validation=same)
    assert report["verdict"] == "inconclusive"
    assert any("same inputs" in w for w in report["warnings"])


def test_the_bootstrap_interval_is_reproducible(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    data = {"train": split("train", N, 0.1, 1), "validation": split("val", N, 0.3, 2)}
    a = _diagnose(tmp_path, model, **data)["gap"]
    b = _diagnose(tmp_path, model, **data)["gap"]
    c = _diagnose(tmp_path, model, {"seed": 7}, **data)["gap"]
    assert a["relative_ci95"] == b["relative_ci95"] and a["relative_ci95"] != c["relative_ci95"]
    assert a["resamples"] == 1000


def test_regression_gap_on_r2(tmp_path) -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 1))
    model = onnx_models.linear(tmp_path / "reg.onnx", w, np.zeros(1), output="y")
    x_tr, x_va = rng.standard_normal((N, 8)), rng.standard_normal((N, 8))
    train = data_files.npz(tmp_path / "tr.npz", x=x_tr.astype(np.float32), y=(x_tr @ w)[:, 0] + rng.normal(0, 0.1, N))
    val = data_files.npz(tmp_path / "va.npz", x=x_va.astype(np.float32), y=(x_va @ w)[:, 0] + rng.normal(0, 3.0, N))
    report = _diagnose(tmp_path, model, train=train, validation=val)
    assert report["task"] == "regression" and report["primary_metric"] == "r2"
    assert set(report["splits"]["train"]["metrics"]) == {"mse", "rmse", "mae", "r2"}
    assert report["splits"]["train"]["metrics"]["r2"] > 0.99 and report["verdict"] == "overfit"
    assert abs(report["splits"]["train"]["baseline_metrics"]["r2"]) < 1e-9  # the mean of train has r2 0 on train


def _keras(path: Path, train: list[float], val: list[float]) -> Path:
    path.write_text(json.dumps({"loss": train, "val_loss": val, "accuracy": [1 - v / 3 for v in train]}))
    return path


def _lightning(path: Path, train: list[float], val: list[float]) -> Path:
    lines = ["epoch,step,train_loss,val_loss"]
    for e, (t, v) in enumerate(zip(train, val, strict=True)):
        lines += [f"{e},{e * 10 + 9},{t},", f"{e},{e * 10 + 9},,{v}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("shape", ["keras", "lightning"])
def test_history_finds_the_best_epoch_and_the_overfitting_onset(tmp_path, linear_classifier, shape) -> None:
    model, split = linear_classifier
    train = [1.0 / (e + 1) for e in range(30)]  # keeps falling
    val = [1.0 / (e + 1) + 0.1 if e < 10 else 0.2 + 0.02 * (e - 9) for e in range(30)]  # lowest at epoch 10
    best = int(np.argmin(val)) + 1
    history = (_keras if shape == "keras" else _lightning)(
        tmp_path / f"h.{'json' if shape == 'keras' else 'csv'}", train, val
    )
    report = _diagnose(
        tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", N, 0.5, 2), history=history
    )
    h = report["history"]
    assert h["curves"]["train_loss"] in ("loss", "train_loss") and h["curves"]["val_loss"] == "val_loss"
    assert h["best_epoch"] == best == 10 and h["overfit_onset_epoch"] == 10
    assert h["patience"] == 3 and h["stopped_epoch"] == 13  # 3 epochs without improvement after epoch 10
    stop = next(r for r in report["remedies"] if r["action"].startswith("early stopping"))
    assert stop["code"] == "EarlyStopping(monitor='val_loss', min_delta=0.0, patience=3, restore_best_weights=True)"
    assert stop["setting"]["stop_epoch"] == 13 and "history_onset" in {e["code"] for e in report["evidence"]}


def test_history_still_falling_says_more_epochs(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    train = [2.0 - 0.1 * e for e in range(12)]
    history = _keras(tmp_path / "h.json", train, [t + 0.05 for t in train])
    report = _diagnose(
        tmp_path, model, train=split("train", N, 1.0, 1), validation=split("val", N, 1.0, 2), history=history
    )
    assert report["history"]["still_improving"] is True and report["verdict"] == "underfit"
    more = next(r for r in report["remedies"] if r["action"] == "train for more epochs")
    assert more["setting"]["epochs"] == [24, 36]


def test_history_without_a_validation_column_warns(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    history = tmp_path / "h.json"
    history.write_text(json.dumps({"loss": [1.0, 0.5, 0.4, 0.35]}))
    report = _diagnose(
        tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", N, 0.0, 2), history=history
    )
    assert report["history"]["best_epoch"] is None
    assert any("no validation column" in w for w in report["warnings"])
    from engine.registry import render_report

    page = render_report(report, {"id": "job_x", "kind": "diagnose", "status": "succeeded"})
    text = re.sub(r"<[^>]+>", " ", page.split("<body", 1)[1])  # the page's words, not its markup or scripts
    assert "Monitor —" not in text and "best epoch —" not in text and "no metric to monitor" in text
    assert not re.search(r"\b(True|False|None)\b", text), re.findall(r".{60}\b(?:True|False|None)\b.{20}", text)


def test_bad_inputs_fail_cleanly(tmp_path, linear_classifier) -> None:
    model, split = linear_classifier
    nan_model = onnx_models.linear(tmp_path / "nan.onnx", np.full((20, 5), np.nan), np.zeros(5))
    with pytest.raises(EngineError) as exc:
        _diagnose(tmp_path, nan_model, train=split("train", N, 0.0, 1), validation=split("val", N, 0.0, 2))
    assert exc.value.code == "invalid_output" and "NaN" in exc.value.detail
    x = np.random.default_rng(0).standard_normal((N, 20)).astype(np.float32)
    seven = data_files.npz(tmp_path / "seven.npz", x=x, y=np.full(N, 7))
    with pytest.raises(EngineError, match="outputs 5 classes"):
        _diagnose(tmp_path, model, train=split("train", N, 0.0, 1), validation=seven)
    wide = data_files.npz(tmp_path / "wide.npz", x=x, y=np.zeros((N, 3), np.float32))
    with pytest.raises(EngineError, match="values per sample"):
        _diagnose(tmp_path, model, {"task": "regression"}, train=wide, validation=wide)


def test_a_class_the_model_never_predicts_is_named(tmp_path) -> None:
    model = onnx_models.linear(tmp_path / "m.onnx", np.zeros((3, 3)), np.array([0, 0, 1.0]))  # always class 2
    x = np.random.default_rng(0).standard_normal((N, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, N)
    data = data_files.npz(tmp_path / "d.npz", x=x, y=y)
    report = _diagnose(
        tmp_path, model, train=data, validation=data_files.npz(tmp_path / "v.npz", x=x[::-1].copy(), y=y)
    )
    assert any("never predicts class(es) [0, 1]" in w for w in report["warnings"]), report["warnings"]


def test_spectral_alpha_of_weights() -> None:
    rng = np.random.default_rng(0)
    fitted = esd_alpha(rng.standard_normal((256, 128)))
    assert fitted["status"] == "fitted" and fitted["alpha"] > 1 and fitted["tail_size"] >= 10
    assert esd_alpha(rng.standard_normal((8, 4)))["status"] == "skipped"
    # A heavy-tailed spectrum (a few large singular values on top of noise) fits a smaller alpha than noise.
    u, _, vt = np.linalg.svd(rng.standard_normal((256, 128)), full_matrices=False)
    heavy = (u * (rng.pareto(1.5, 128) + 1)) @ vt
    assert esd_alpha(heavy)["alpha"] < fitted["alpha"]


def test_weights_analysis_in_the_job(tmp_path, linear_classifier) -> None:
    _, split = linear_classifier
    model = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=20, hidden=64, n_out=5)
    report = run_in_child(
        "diagnose", _inputs(tmp_path, model, train=split("train", N, 0.0, 1), validation=split("val", N, 0.0, 2)), {}
    )["report"]
    rows = {r["weight"]: r for r in report["weights"]}
    assert rows["w1"]["status"] == "skipped" and "too small" in rows["w1"]["reason"]  # 20 x 64
    assert set(rows) == {"w1", "w2"}


def test_the_report_page_puts_the_verdict_first(tmp_path, linear_classifier) -> None:
    from engine.registry import render_report

    model, split = linear_classifier
    train = [1.0 / (e + 1) for e in range(30)]
    history = _keras(
        tmp_path / "h.json", train, [t + 0.1 if e < 10 else 0.2 + 0.02 * (e - 9) for e, t in enumerate(train)]
    )
    data = {"train": split("train", N, 0.0, 1), "validation": split("val", N, 0.5, 2), "history": history}
    report = run_in_child(
        "diagnose", _inputs(tmp_path, onnx_models.mlp(tmp_path / "m.onnx", n_in=20, hidden=64, n_out=5), **data), {}
    )
    page = render_report(report["report"], {"id": "job_x", "kind": "diagnose", "status": "succeeded"})
    assert "Fit diagnosis:" in page and page.index(report["report"]["summary"][:30]) < page.index("<svg")
    assert "best epoch" in page and "EarlyStopping(monitor=" in page and "naive baseline" in page


def test_a_gap_that_straddles_the_threshold_is_overfit_only_with_an_onset_in_the_history(
    tmp_path, linear_classifier
) -> None:
    model, split = linear_classifier
    data = {"train": split("train", N, 0.0, 1), "validation": split("val", 150, 0.08, 2)}  # gap 8.7% [4.7, 13.3]
    plain = _diagnose(tmp_path, model, **data)
    lo, hi = plain["gap"]["relative_ci95"]
    assert 0 < lo < 0.1 <= hi and plain["gap"]["relative"] < 0.1  # significant, may or may not reach 10%
    assert plain["verdict"] == "inconclusive"
    assert any(r["action"] == "a larger validation set" for r in plain["remedies"])
    train = [1.0 / (e + 1) for e in range(30)]
    history = _keras(
        tmp_path / "h.json", train, [t + 0.1 if e < 10 else 0.2 + 0.02 * (e - 9) for e, t in enumerate(train)]
    )
    with_history = _diagnose(tmp_path, model, **data, history=history)
    assert with_history["verdict"] == "overfit"
    assert "significant_gap_and_onset" in {e["code"] for e in with_history["evidence"]}


def test_a_model_that_fits_nothing_is_underfit_whatever_its_relative_gap(tmp_path) -> None:
    """Degree-1 fit of quadratic data: r2 about 0 on train, so (train - val) / |train| explodes: not overfitting."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 1))
    y = 2 * x[:, 0] ** 2 + rng.normal(0, 0.2, 400)
    slope = np.polyfit(x[:200, 0], y[:200], 1)
    model = onnx_models.linear(tmp_path / "line.onnx", np.array([[slope[0]]]), np.array([slope[1]]), output="y")
    train = data_files.npz(tmp_path / "tr.npz", x=x[:200].astype(np.float32), y=y[:200])
    val = data_files.npz(tmp_path / "va.npz", x=x[200:].astype(np.float32), y=y[200:])
    report = _diagnose(tmp_path, model, train=train, validation=val)
    assert report["verdict"] == "underfit"
    assert "gap_of_an_unfit_model" in {e["code"] for e in report["evidence"]}


def test_early_stopping_replay_follows_keras() -> None:
    curve = [1.0, 0.5, 0.6, 0.55, 0.52, 0.4, 0.45]  # best 0.5 at epoch 2; 3 epochs without improvement; 0.4 later
    assert replay(curve, True, 0.0, 3) == {
        "best_epoch": 6,
        "best_value": 0.4,
        "stopped_epoch": 5,  # epochs 3, 4, 5 do not improve on epoch 2
        "restored_epoch": 2,
    }
    assert replay(curve, True, 0.0, 10)["stopped_epoch"] is None
    assert replay([0.5, 0.6, 0.61], False, 0.05, 1)["best_epoch"] == 2  # 0.61 is not 0.05 better


def test_binary_classifier_with_one_logit_and_a_test_split(tmp_path) -> None:
    rng = np.random.default_rng(9)
    model = onnx_models.mlp(tmp_path / "m.onnx", n_in=6, hidden=16, n_out=1)  # a single logit: sigmoid
    import onnxruntime as ort

    def split(name: str, n: int) -> Path:
        x = rng.standard_normal((n, 6)).astype(np.float32)
        logit = ort.InferenceSession(str(model)).run(None, {"x": x})[0][:, 0]
        return data_files.npz(tmp_path / f"{name}.npz", x=x, y=(logit > 0).astype(np.int64))

    report = _diagnose(tmp_path, model, train=split("tr", 200), validation=split("va", 200), test=split("te", 100))
    assert report["output_interpretation"] == "logits" and report["verdict"] == "good_fit"
    for role in ("train", "validation", "test"):
        m = report["splits"][role]["metrics"]
        assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0
        lo, hi = report["splits"][role]["primary_ci95"]
        assert lo <= 1.0 <= hi
    assert report["gap"]["test_absolute"] == 0.0


def test_dropout_remedy_names_the_hidden_layers(tmp_path) -> None:
    import onnxruntime as ort

    model = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=20, hidden=64, n_out=5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2 * N, 20)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    noisy = y.copy()
    flip = rng.random(N) < 0.5
    noisy[N:][flip] = rng.integers(0, 5, int(flip.sum()))
    train = data_files.npz(tmp_path / "tr.npz", x=x[:N], y=y[:N])
    val = data_files.npz(tmp_path / "va.npz", x=x[N:], y=noisy[N:])
    report = _diagnose(tmp_path, model, {"primary_metric": "macro_f1"}, train=train, validation=val)
    assert report["primary_metric"] == "macro_f1" and report["verdict"] == "overfit"
    dropout = next(r for r in report["remedies"] if r["action"].startswith("dropout"))
    assert dropout["setting"]["layers"] == ["fc1"]  # fc2 is the output layer


def test_no_gap_is_not_a_good_fit(tmp_path, linear_classifier) -> None:
    """Poor on train and on validation alike (accuracy ~0.45, 5 classes, a gain over the baseline of ~0.3): without
    a gap the old rule said good_fit. With falling losses at the last epoch it is underfit; without a history, the
    gain is below what a good fit needs: inconclusive, and it says why."""
    model, split = linear_classifier
    n = 3000  # enough that the gap's interval is narrower than the threshold: no gap, for sure
    data = {"train": split("train", n, 0.69, 1), "validation": split("val", n, 0.69, 2)}
    report = _diagnose(tmp_path, model, **data)
    va_gain = report["splits"]["validation"]["gain"]
    assert 0.1 < va_gain < 0.5 and report["splits"]["train"]["gain"] > 0.25  # neither old underfit rule fires
    assert report["verdict"] == "inconclusive"
    assert any(e["code"] == "gain_below_good_fit" for e in report["evidence"])
    assert "below the 50.0% a good fit needs" in report["summary"]
    falling = [2.0 - 0.1 * e for e in range(30)]
    history = _keras(tmp_path / "h.json", falling, [t + 0.05 for t in falling])
    report = _diagnose(tmp_path, model, **data, history=history)
    assert report["verdict"] == "underfit" and report["history"]["still_improving"] is True
    assert any(r["action"] == "train for more epochs" for r in report["remedies"])


def _polynomial(tmp_path: Path, degree: int, x: np.ndarray, y: np.ndarray) -> Path:
    """A float64 ONNX model of the least-squares polynomial of `degree` through (x, y): Pow features, MatMul, Add."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    coef = np.polynomial.polynomial.polyfit(x, y, degree)  # lowest power first
    inits = [
        numpy_helper.from_array(np.arange(1, degree + 1, dtype=np.float64), "powers"),
        numpy_helper.from_array(coef[1:].reshape(-1, 1), "w"),
        numpy_helper.from_array(coef[:1], "b"),
    ]
    nodes = [
        helper.make_node("Pow", ["x", "powers"], ["features"]),
        helper.make_node("MatMul", ["features", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "poly",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"poly{degree}.onnx"
    onnx.save(model, str(path))
    return path


def test_clear_overfitting_on_a_small_train_split_is_decided_by_the_intervals(tmp_path) -> None:
    """A degree-15 polynomial through 20 points, validated on 200: train R^2 ~1, validation R^2 far below 0. The
    train split is under min_samples, but the gap's interval is narrow: overfit, not 'too few samples'. The gap is
    measured on RMSE (bounded relative gap), R^2 only described."""
    rng = np.random.default_rng(3)
    x_tr, x_va = np.sort(rng.uniform(-1, 1, 20)), rng.uniform(-1, 1, 200)
    f = np.sin(3 * x_tr), np.sin(3 * x_va)
    y_tr, y_va = f[0] + rng.normal(0, 0.2, 20), f[1] + rng.normal(0, 0.2, 200)
    model = _polynomial(tmp_path, 15, x_tr, y_tr)
    train = data_files.npz(tmp_path / "tr.npz", x=x_tr.reshape(-1, 1), y=y_tr)
    val = data_files.npz(tmp_path / "va.npz", x=x_va.reshape(-1, 1), y=y_va)
    report = _diagnose(tmp_path, model, train=train, validation=val)
    tr, va = report["splits"]["train"]["metrics"], report["splits"]["validation"]["metrics"]
    assert tr["r2"] > 0.95 and va["r2"] < 0, (tr, va)
    gap = report["gap"]
    assert gap["metric"] == "rmse" and gap["lower_is_better"] is True and gap["relative"] > 0.5
    assert gap["relative_ci95"][0] > 0.1
    assert report["verdict"] == "overfit", report["evidence"]
    codes = [e["code"] for e in report["evidence"]]
    assert "few_samples_narrow_interval" in codes and "too_few_samples" not in codes
    assert "train has 20 samples" in next(e["text"] for e in report["evidence"] if e["code"].startswith("few"))

    # degree 5 through 200 points, validated on 200 more: no overfitting. The RMSE gap is measured in units of the
    # naive baseline's RMSE (the labels' spread, 0.75 here, against noise 0.2), so its interval is narrow enough to
    # say so on 200 points (relative to validation's own RMSE it was +-14%, straddling the threshold)
    x_big, x_val = rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200)
    y_big, y_val = np.sin(3 * x_big) + rng.normal(0, 0.2, 200), np.sin(3 * x_val) + rng.normal(0, 0.2, 200)
    model = _polynomial(tmp_path, 5, x_big, y_big)
    train = data_files.npz(tmp_path / "tr2.npz", x=x_big.reshape(-1, 1), y=y_big)
    val = data_files.npz(tmp_path / "va2.npz", x=x_val.reshape(-1, 1), y=y_val)
    report = _diagnose(tmp_path, model, train=train, validation=val)
    assert report["verdict"] == "good_fit", report["evidence"]
    assert abs(report["gap"]["relative"]) < 0.1 and report["gap"]["relative_ci95"][1] < 0.1


def test_overfitting_seen_in_the_history_decides_with_a_significant_gap_only(tmp_path, linear_classifier) -> None:
    """Validation loss lowest at epoch 11 of 30, then 30% higher while train loss falls: with a significant gap
    below the 10% threshold the verdict is overfit (without the history the same gap is a good fit); with no gap
    the history alone is inconclusive (the uploaded weights may be the best epoch's)."""
    model, split = linear_classifier
    loss = [1.0 / (e + 1) for e in range(30)]
    val_loss = [0.5 - 0.03 * e if e < 10 else 0.2 * (1 + 0.3 * (e - 9) / 20) for e in range(30)]
    history = tmp_path / "h.json"
    history.write_text(json.dumps({"loss": loss, "val_loss": val_loss}))
    train, val = split("train", 2000, 0.0, 1), split("val", 2000, 0.06, 2)
    plain = _diagnose(tmp_path, model, train=train, validation=val)
    gap = plain["gap"]
    assert gap["relative_ci95"][0] > 0 and gap["relative_ci95"][1] < 0.1, gap
    assert plain["verdict"] == "good_fit", plain["evidence"]
    report = _diagnose(tmp_path, model, train=train, validation=val, history=history)
    assert report["history"]["overfit_onset_epoch"] == 11 and report["history"]["val_loss_rise"] > 0.25
    assert report["verdict"] == "overfit", report["evidence"]
    assert "significant_gap_and_history_overfit" in [e["code"] for e in report["evidence"]]
    same = _diagnose(tmp_path, model, train=train, validation=split("clean", 2000, 0.0, 3), history=history)
    assert same["verdict"] == "inconclusive", same["evidence"]
    assert "history_overfit_no_gap" in [e["code"] for e in same["evidence"]]


def test_the_learning_curve_retrains_the_architecture_and_finds_under_trained_weights(tmp_path) -> None:
    """A digits MLP stopped after 3 iterations at a tiny learning rate, no history: from the gains alone the
    verdict could only be inconclusive. The learning curve re-initialises its graph and re-trains it on 10-100% of
    train: the same architecture reaches > 90% on validation, so the uploaded weights are under-trained -> underfit,
    with the recipe as the remedy. The report and the page say the curve measures the architecture, not the
    weights; the page shows the curve."""
    pytest.importorskip("torch")
    from engine.kinds.diagnose import KIND as DIAGNOSE
    from tests import digits

    d = digits.split()
    model = digits.mlp(tmp_path / "slow.onnx", d, hidden=32, max_iter=3, learning_rate_init=1e-4)
    train = data_files.npz(tmp_path / "tr.npz", x=d["x_train"], y=d["y_train"])
    val = data_files.npz(tmp_path / "va.npz", x=d["x_val"], y=d["y_val"])
    params = {"learning_curve": True, "learning_curve_search_epochs": 15}
    report = _diagnose(tmp_path, model, params, train=train, validation=val)
    curve = report["learning_curve"]
    assert "not used" in curve["method"] and "re-trained" in curve["method"]
    assert [pt["samples"] for pt in curve["points"]] == [110, 275, 550, 1100]
    epochs = [pt["epochs"] for pt in curve["points"]]
    assert epochs[0] >= 9 * epochs[-1] and epochs == sorted(epochs, reverse=True)  # the same steps at every size
    last = curve["points"][-1]
    assert last["validation"] > 0.9 and last["validation_ci95"][0] < last["validation"] < last["validation_ci95"][1]
    assert report["splits"]["validation"]["metrics"]["accuracy"] < 0.8
    codes = {e["code"]: e["points_to"] for e in report["evidence"]}
    assert codes.get("curve_undertrained") == "underfit" and report["verdict"] == "underfit", report["evidence"]
    retrain = next(r for r in report["remedies"] if r["evidence"] == ["curve_undertrained"])
    assert retrain["setting"]["learning_rate"] in params.get("learning_curve_learning_rates", [1e-3, 3e-3, 1e-2])
    assert not any("capacity" in r["action"] for r in report["remedies"])  # the architecture fits when trained
    page = DIAGNOSE.render(report, {"id": "job_x", "kind": "diagnose", "status": "succeeded"})
    assert "measures the architecture, not the uploaded weights" in page
    assert 'aria-label="accuracy by training samples (log scale)"' in page and "95% interval" in page


def test_the_learning_curve_needs_a_graph_the_interpreter_can_train(tmp_path) -> None:
    """A scikit-learn pipeline (ai.onnx.ml operators) cannot be re-trained: refused at submit, naming the ops."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from engine.inspect import check_and_inspect
    from engine.kinds.diagnose import KIND as DIAGNOSE
    from engine.kinds.diagnose.models import DiagnoseParams

    x = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    path = tmp_path / "lr.onnx"
    path.write_bytes(to_onnx(LogisticRegression().fit(x, x[:, 0] > 0), x[:1]).SerializeToString())
    info = check_and_inspect(str(path))
    with pytest.raises(EngineError, match="LinearClassifier"):
        DIAGNOSE.validate(info, {}, DiagnoseParams(learning_curve=True))
    assert DIAGNOSE.needs(DiagnoseParams(learning_curve=True)) == {"torch"} and not DIAGNOSE.needs(DiagnoseParams())
    with pytest.raises(ValueError, match="less than or equal to 1"):
        DiagnoseParams(learning_curve_sizes=[0.5, 1.5])
    assert DiagnoseParams(learning_curve_sizes=[1, 0.5, 0.5]).learning_curve_sizes == [0.5, 1.0]
