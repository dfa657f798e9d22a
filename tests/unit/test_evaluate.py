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


def test_a_zipmap_with_string_classes_is_read_in_sorted_class_order(tmp_path) -> None:
    """skl2onnx's ZipMap gives {class name: probability} per sample; evaluate reads it as the probabilities of the
    sorted class names, which is how string labels are indexed, so accuracy matches scikit-learn's."""
    import onnx
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from engine.registry import run_in_child
    from engine.runtime import as_array
    from tests import data_files
    from tests.job_inputs import job_inputs

    x, y = load_iris(return_X_y=True)
    names = np.array(["virginica", "setosa", "versicolor"])[y]  # not in sorted order
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=1000).fit(x[::2], names[::2])
    path = tmp_path / "iris.onnx"
    onnx.save(to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}), str(path))
    data = data_files.npz(tmp_path / "eval.npz", x=x[1::2], y=names[1::2])
    report = run_in_child("evaluate", job_inputs(tmp_path, path, eval=data), {})["report"]
    assert report["metrics"]["accuracy"] == pytest.approx(model.score(x[1::2], names[1::2]))
    assert as_array([{"b": 0.25, "a": 0.75}]).tolist() == [[0.75, 0.25]]
    with pytest.raises(Exception, match="not of class probabilities"):
        as_array([np.zeros(2)])


def test_an_output_that_is_not_an_array_is_unsupported_not_a_runtime_failure() -> None:
    """run_batched: the model ran; what it returned cannot be read as an array (a sequence that is not of class
    probabilities) is `unsupported`, while a failure of the run itself is `runtime_error`."""
    from engine.core.errors import EngineError
    from engine.runtime import run_batched

    class Returns:  # an ONNX Runtime session's `run`, returning what the model gave
        def __init__(self, value: object) -> None:
            self.value = value

        def run(self, names, feeds):
            if isinstance(self.value, Exception):
                raise self.value
            return [self.value]

    feeds = {"x": np.zeros((4, 2), np.float32)}
    with pytest.raises(EngineError) as exc:
        run_batched(Returns([np.zeros(2)] * 4), feeds, "y", 2)
    assert exc.value.code == "unsupported"
    with pytest.raises(EngineError) as exc:
        run_batched(Returns(RuntimeError("shape mismatch")), feeds, "y", 2)
    assert exc.value.code == "runtime_error" and "shape mismatch" in exc.value.detail
