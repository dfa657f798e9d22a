"""scikit-learn models exported with skl2onnx (ai.onnx.ml operators, ZipMap outputs) through the API and a real
worker: the kinds that run a model through ONNX Runtime work on them and agree with scikit-learn; the kinds that
need weights as initializers (prune, distill, quantize) refuse them at submit, naming the operators."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests import data_files
from tests.e2e.conftest import wait_job
from tests.e2e.test_jobs import submit, upload_dataset, upload_model

REDIS_DB = 12
OPSETS = {"": 17, "ai.onnx.ml": 3}


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker()


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0)


def _save(model, x, path, options=None):
    onnx.save(to_onnx(model, x[:1], options=options, target_opset=OPSETS), str(path))
    return path


def _done(api, job):
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    return api.get(f"/v1/jobs/{job['id']}/report").json()


def test_zipmap_classifiers_evaluate_and_diagnose_as_scikit_learn_scores_them(api, worker, cancer, tmp_path) -> None:
    x_tr, x_va, y_tr, y_va = cancer
    train = upload_dataset(api, data_files.npz(tmp_path / "tr.npz", x=x_tr, y=y_tr))
    val = upload_dataset(api, data_files.npz(tmp_path / "va.npz", x=x_va, y=y_va))
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_tr, y_tr)
    forest = RandomForestClassifier(30, max_depth=5, random_state=0).fit(x_tr, y_tr)
    ids = {}
    for name, model in (("pipeline", pipeline), ("forest", forest)):
        path = _save(model, x_tr, tmp_path / f"{name}.onnx")
        outputs = {o.name: o.type.WhichOneof("value") for o in onnx.load(str(path)).graph.output}
        assert outputs["output_probability"] == "sequence_type"  # a ZipMap: a list of {class: probability}
        model_id = ids[name] = upload_model(api, path)
        report = _done(api, submit(api, kind="evaluate", model_id=model_id, datasets={"eval": val}))
        assert report["output"] == "output_probability"
        assert report["metrics"]["accuracy"] == pytest.approx(model.score(x_va, y_va), abs=1e-9), name
        proba = model.predict_proba(x_va)
        assert report["metrics"]["log_loss"] == pytest.approx(
            -np.mean(np.log(np.clip(proba[np.arange(len(y_va)), y_va], 1e-15, 1))), rel=1e-3
        )
        diag = _done(api, submit(api, kind="diagnose", model_id=model_id, datasets={"train": train, "validation": val}))
        assert diag["splits"]["train"]["metrics"]["accuracy"] == pytest.approx(model.score(x_tr, y_tr), abs=1e-9)
        assert diag["verdict"] in ("good_fit", "overfit", "inconclusive")
        bench = _done(api, submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5}))
        assert bench["results"]
    body = {"kind": "compare", "model_id": ids["pipeline"], "datasets": {"eval": val}}
    cmp = _done(api, submit(api, **body, params={"other_model_id": ids["forest"], "runs": 5}))["comparison"]
    accuracy = cmp["metrics"]["accuracy"]
    assert accuracy["original"] == pytest.approx(pipeline.score(x_va, y_va), abs=1e-9), accuracy
    assert accuracy["candidate"] == pytest.approx(forest.score(x_va, y_va), abs=1e-9), accuracy
    assert {f["output"] for f in cmp["fidelity"]} >= {"output_probability"}, cmp["fidelity"]


def test_a_regressor_through_the_api_and_the_refusals_at_submit(api, worker, cancer, tmp_path) -> None:
    x_tr, x_va, y_tr, y_va = cancer
    target = x_tr[:, 0] * 2 + x_tr[:, 3] / 100
    regressor = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(x_tr, target)
    model_id = upload_model(api, _save(regressor, x_tr, tmp_path / "gbr.onnx"))
    y_val = x_va[:, 0] * 2 + x_va[:, 3] / 100
    val = upload_dataset(api, data_files.npz(tmp_path / "rva.npz", x=x_va, y=y_val.astype(np.float32)))
    report = _done(api, submit(api, kind="evaluate", model_id=model_id, datasets={"eval": val}))
    assert report["metrics"]["r2"] == pytest.approx(r2_score(y_val, regressor.predict(x_va)), abs=1e-4)

    classifier = upload_model(api, _save(LogisticRegression(max_iter=1000).fit(x_tr, y_tr), x_tr, tmp_path / "l.onnx"))
    train = upload_dataset(api, data_files.npz(tmp_path / "ctr.npz", x=x_tr, y=y_tr))
    refusals = [
        ({"kind": "distill", "params": {"epochs": 1}}, "unsupported-op", "LinearClassifier"),
        ({"kind": "prune", "params": {"method": "structured", "ratio": 0.3}}, "nothing-to-prune", "ai.onnx.ml"),
        ({"kind": "quantize", "params": {"mode": "dynamic"}}, "nothing-to-quantize", "ai.onnx.ml"),
        ({"kind": "prune", "params": {"method": "simplify"}}, "unsupported", "zipmap"),
        ({"kind": "optimize", "params": {}}, "unsupported-op", "none of optimize's methods"),
        ({"kind": "diagnose", "params": {"learning_curve": True}}, "unsupported-op", "LinearClassifier"),
    ]
    for body, problem, words in refusals:
        datasets = {"train": train, "eval": train, **({"validation": train} if body["kind"] == "diagnose" else {})}
        r = api.post("/v1/jobs", json={**body, "model_id": classifier, "datasets": datasets})
        assert r.status_code == 422 and r.json()["type"].endswith(problem), r.text
        assert words in r.json()["detail"], r.json()["detail"]
