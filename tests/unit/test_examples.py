"""`onnxsmith example-files DIR`: the files the README's walk-throughs use, made from numpy (and scikit-learn's
digits when it is installed)."""

from __future__ import annotations

import json
import sys

import numpy as np
from typer.testing import CliRunner

from engine.examples import write_examples
from engine.inspect import check_and_inspect
from onnxsmith.cli import app as cli

EXPECTED = {"classifier.onnx", "classifier-test.npz", "digits_mlp.onnx", "train.npz", "val.npz", "test.npz",
            "history.json"}  # fmt: skip


def test_the_command_writes_every_file_of_the_walk_throughs(tmp_path) -> None:
    r = CliRunner().invoke(cli, ["example-files", str(tmp_path / "ex"), "--epochs", "3"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "ex").iterdir()} == EXPECTED
    assert "scikit-learn's digits" in r.output and "test accuracy" in r.output
    classifier = check_and_inspect(str(tmp_path / "ex" / "classifier.onnx"))
    assert classifier.parameter_count == 27 and classifier.inputs[0].shape == ["batch", 8]
    with np.load(tmp_path / "ex" / "classifier-test.npz") as d:
        assert d["x"].shape == (300, 8) and set(np.unique(d["y"])) <= {0, 1, 2}
    sizes = {n: len(np.load(tmp_path / "ex" / f"{n}.npz")["y"]) for n in ("train", "val", "test")}
    assert sizes == {"train": 1100, "val": 350, "test": 347}
    history = json.loads((tmp_path / "ex" / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(history["loss"]) == 3


def test_the_mlp_learns_and_without_scikit_learn_the_data_is_a_named_stand_in(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    made = write_examples(tmp_path, epochs=8)
    assert "synthetic stand-in" in made.digits_source
    assert made.digits_test_accuracy > 0.8, made.digits_test_accuracy  # chance is 0.1
    assert check_and_inspect(str(made.files["digits_mlp.onnx"])).parameter_count == 64 * 256 + 256 + 256 * 10 + 10
