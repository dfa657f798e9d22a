import numpy as np
import pytest

from engine.measure.metrics import class_probabilities, classification_metrics, regression_metrics, wilson_ci95


def test_output_interpretation() -> None:
    probs, how = class_probabilities(np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert how == "probabilities" and np.allclose(probs, [[0.2, 0.8], [0.9, 0.1]])
    probs, how = class_probabilities(np.array([[2.0, 0.0], [0.0, 3.0]]))
    assert how == "logits" and np.allclose(probs.sum(axis=1), 1) and probs[0, 0] > 0.8
    probs, how = class_probabilities(np.array([[0.0], [2.0]]))  # one binary logit
    assert how == "logits" and probs.shape == (2, 2) and probs[0, 1] == pytest.approx(0.5)
    probs, how = class_probabilities(np.array([0.3, 0.9]))  # one binary probability
    assert how == "probabilities" and np.allclose(probs[:, 1], [0.3, 0.9])


def test_classification_metrics_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 0]] * 0.98 + 0.02 / 3
    m = classification_metrics(probs, y)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # per class F1: c0 tp1 fp1 fn1 -> 0.5; c1 tp2 fp1 fn0 -> 0.8; c2 tp0 fn1 -> 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["log_loss"] > 0


def test_regression_and_ci() -> None:
    m = regression_metrics(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]]))
    assert m["mse"] == pytest.approx(1 / 3) and m["mae"] == pytest.approx(1 / 3)
    assert m["r2"] == pytest.approx(1 - 1 / (14 / 3))
    assert regression_metrics(np.ones((3, 1)), np.ones((3, 1)))["r2"] is None
    lo, hi = wilson_ci95(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-3) and hi == pytest.approx(0.9448, abs=1e-3)
