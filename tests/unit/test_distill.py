"""The distill kind: a structurally pruned student trained to imitate its teacher, in the graph it already has."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.core.errors import EngineError
from engine.datasets import inspect_dataset
from engine.inspect import check_and_inspect
from engine.registry import run_in_child
from tests import data_files, onnx_models
from tests.job_inputs import job_inputs

torch = pytest.importorskip("torch", reason="distillation needs the train extra (torch==2.13.0)")

from engine.kinds.distill import KIND as DISTILL  # noqa: E402
from engine.kinds.distill import DistillParams  # noqa: E402

validate = DISTILL.validate


def _inputs(tmp_path: Path, model: Path, **datasets: Path) -> dict:
    return job_inputs(tmp_path, model, max_threads=1, **datasets)


@pytest.fixture
def teacher(tmp_path):
    """A 16-96-4 MLP and data labelled by it (teacher accuracy 1.0)."""
    import onnxruntime as ort

    model = onnx_models.mlp(tmp_path / "teacher.onnx", n_in=16, hidden=96, n_out=4)
    x = np.random.default_rng(0).standard_normal((900, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    train = data_files.npz(tmp_path / "train.npz", x=x[:600], y=y[:600])
    val = data_files.npz(tmp_path / "val.npz", x=x[600:], y=y[600:])
    return model, train, val


FAST = {"runs": 5, "batch_sizes": [1], "epochs": 40, "learning_rate": 3e-3, "patience": 8}


def test_distillation_recovers_what_pruning_cost(tmp_path, teacher) -> None:
    model, train, val = teacher
    out = run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), {"ratio": 0.5, **FAST})
    report = out["report"]
    acc = report["comparison"]["metrics"]["accuracy"]
    before = report["before_training"]["value"]
    assert before < 0.9 and acc["original"] == 1.0  # pruning half the hidden units costs accuracy
    assert acc["candidate"] > before + 0.15, (before, acc["candidate"])  # measured: 0.59 -> 0.83
    assert report["parameters"]["student"] < 0.6 * report["parameters"]["teacher"]
    assert report["student"]["pruned_layers"][0]["units_after"] == 48
    assert report["interpreter_max_difference"] < 1e-3
    assert len(report["history"]["loss"]) == report["epochs_run"] and "val_loss" in report["history"]
    assert report["learning_curves"]["epochs"] == report["epochs_run"]
    assert out["artifacts"][0]["register_as_model"] == "distilled"
    # The trained student keeps the graph of the pruned teacher: same nodes, same names, same opsets.
    produced = onnx.load(str(tmp_path / "out" / "model.distilled.onnx"))
    original = onnx.load(str(model))
    assert [(n.op_type, n.name, list(n.input)) for n in produced.graph.node] == [
        (n.op_type, n.name, list(n.input)) for n in original.graph.node
    ]
    assert produced.opset_import == original.opset_import


def test_early_stopping_fires_and_restores_the_best_epoch(tmp_path, teacher) -> None:
    model, train, val = teacher
    params = {**FAST, "epochs": 60, "learning_rate": 0.05, "patience": 3, "ratio": 0.5}  # a high rate plateaus fast
    report = run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), params)["report"]
    assert report["stopped_early"] is True and report["epochs_run"] < 60
    assert report["best_epoch"] == report["epochs_run"] - 3
    val_loss = report["history"]["val_loss"]
    assert min(val_loss) == val_loss[report["best_epoch"] - 1]


def test_bad_requests(tmp_path, teacher) -> None:
    model, train, _ = teacher
    info = check_and_inspect(str(model))
    unlabeled = inspect_dataset(
        str(data_files.npz(tmp_path / "u.npz", x=np.ones((10, 16), np.float32))), "npz", "samples", None
    )
    with pytest.raises(EngineError, match="no labels"):
        validate(info, {"train": unlabeled}, DistillParams(alpha=0.5, monitor="loss"))
    validate(info, {"train": unlabeled}, DistillParams(alpha=0.0, monitor="loss"))  # soft targets alone: fine
    with pytest.raises(EngineError, match="validation"):
        validate(info, {"train": unlabeled}, DistillParams(alpha=0.0))
    assert DistillParams.model_validate({"student": {"auto": {"ratio": 0.3}}}).ratio == 0.3
    both = {"student": {"auto": {"ratio": 0.3}}, "student_model_id": "mdl_x"}
    for bad in ({"student": {"other": 1}}, {"ratio": 1.0}, {"temperature": 0}, both, {"teacher": "x"}):
        with pytest.raises(ValueError):
            DistillParams.model_validate(bad)


def test_without_torch_the_job_fails_with_missing_dependency(tmp_path, teacher, monkeypatch) -> None:
    model, train, val = teacher
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(EngineError) as exc:
        run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), FAST)
    assert exc.value.code == "missing_dependency" and "torch==2.13.0" in exc.value.detail


def test_digits_student_at_half_width_comes_back_within_a_point_of_its_teacher(tmp_path) -> None:
    pytest.importorskip("sklearn", reason="scikit-learn's bundled digits")
    from bench import models

    split = models.digits_split()
    teacher = models.digits_mlp(tmp_path / "digits.onnx", split)
    train = data_files.npz(tmp_path / "train.npz", x=split["x_train"], y=split["y_train"])
    test = data_files.npz(tmp_path / "test.npz", x=split["x_test"], y=split["y_test"])
    params = {"ratio": 0.5, "epochs": 10, "patience": 5, "runs": 5, "batch_sizes": [1]}
    report = run_in_child("distill", _inputs(tmp_path, teacher, train=train, validation=test), params)["report"]
    acc = report["comparison"]["metrics"]["accuracy"]
    assert acc["original"] - acc["candidate"] <= 0.01, (report["before_training"], acc)


def test_a_diverging_run_stops_and_keeps_the_best_weights(tmp_path, teacher) -> None:
    model, train, val = teacher
    params = {**FAST, "optimizer": "sgd", "learning_rate": 10.0, "epochs": 10}  # measured: NaN at epoch 4
    report = run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), params)["report"]
    assert report["diverged_at_epoch"] is not None and report["epochs_run"] == report["diverged_at_epoch"] - 1
    assert any("NaN/inf" in w for w in report["warnings"])
    assert report["comparison"]["fidelity"][0]["non_finite_values"] == 0  # the restored weights are finite


def test_a_small_cnn_student(tmp_path) -> None:
    """Conv -> Relu -> Reshape -> MatMul: the conv loses half its channels, the Reshape's constant follows."""
    import onnxruntime as ort

    model = onnx_models.cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((240, 3, 32, 32)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    train = data_files.npz(tmp_path / "train.npz", x=x[:180], y=y[:180])
    val = data_files.npz(tmp_path / "val.npz", x=x[180:], y=y[180:])
    params = {**FAST, "epochs": 8, "alpha": 0.0}
    report = run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), params)["report"]
    assert report["student"]["pruned_layers"][0]["units_after"] == 4 and report["interpreter_max_difference"] < 1e-3
    assert report["history"]["val_loss"][-1] < report["history"]["val_loss"][0]  # it learns
    produced = onnx.load(str(tmp_path / "out" / "model.distilled.onnx"))
    assert {t.name: list(t.dims) for t in produced.graph.initializer}["w"] == [4, 3, 3, 3]


def test_distillation_after_group_pruning_of_a_residual_cnn(tmp_path) -> None:
    """The auto student of a residual CNN is pruned in dependency groups (the two convs joined by the residual Add
    lose the same channels); the interpreter trains the pruned graph, Add, Concat and the depthwise conv
    included, and the student imitates its teacher better after training than before."""
    import onnxruntime as ort

    from tests.unit.test_prune import residual_concat_cnn

    model = residual_concat_cnn(tmp_path / "res.onnx", zero=False)
    x = np.random.default_rng(1).standard_normal((320, 3, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    train = data_files.npz(tmp_path / "tr.npz", x=x[:256], y=y[:256])
    val = data_files.npz(tmp_path / "va.npz", x=x[256:], y=y[256:])
    params = {**FAST, "ratio": 0.5, "epochs": 30, "alpha": 0.0}
    report = run_in_child("distill", _inputs(tmp_path, model, train=train, validation=val), params)["report"]
    pruned = {r["layer"]: r for r in report["student"]["pruned_layers"]}
    assert pruned["conv_a"]["group"] == pruned["conv_b"]["group"] and pruned["conv_a"]["units_after"] == 4
    assert report["parameters"]["student"] < report["parameters"]["teacher"]
    assert report["interpreter_max_difference"] < 1e-3
    accuracy = report["comparison"]["metrics"]["accuracy"]["candidate"]
    assert accuracy > report["before_training"]["value"], (accuracy, report["before_training"])
