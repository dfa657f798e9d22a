"""Jobs end to end: API -> Redis -> a real Celery worker -> PostgreSQL -> store, for each kind."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.jobs.queue import Enqueuer
from tests import data_files, onnx_models
from tests.e2e.conftest import wait_job

REDIS_DB = 11


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker()


def upload_model(api, path):
    with open(path, "rb") as f:
        r = api.post("/v1/models", files={"file": (path.name, f)})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def upload_dataset(api, path, **fields):
    with open(path, "rb") as f:
        r = api.post("/v1/datasets", files={"file": (path.name, f)}, data=fields or None)
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def submit(api, **body):
    r = api.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()


@pytest.fixture
def classifier(tmp_path):
    rng = np.random.default_rng(7)
    w, b = rng.standard_normal((8, 3)), rng.standard_normal(3)
    x = rng.standard_normal((300, 8))
    y = rng.integers(0, 3, 300)
    y[:200] = (x[:200] @ w + b).argmax(axis=1)  # two thirds agree with the model, the rest is noise
    return w, b, x, y, onnx_models.linear(tmp_path / "clf.onnx", w, b)


def test_evaluate_classification_matches_numpy(api, worker, classifier, tmp_path) -> None:
    w, b, x, y, path = classifier
    model_id = upload_model(api, path)
    ds_id = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x, y=y))
    job = submit(api, kind="evaluate", model_id=model_id, datasets={"test": ds_id}, params={"batch_size": 64})
    assert job["status"] == "queued" and job["datasets"] == {"test": ds_id, "eval": ds_id}
    done = wait_job(api, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["attempts"] == 1
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]

    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    logits = (x.astype(np.float32) @ w.astype(np.float32) + b.astype(np.float32)).astype(np.float64)
    pred = logits.argmax(axis=1)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert report["kind"] == "evaluate" and report["schema_version"] == 1 and report["task"] == "classification"
    assert report["sample_count"] == 300 and report["output_interpretation"] == "logits"
    assert report["metrics"]["accuracy"] == pytest.approx((pred == y).mean())
    assert report["metrics"]["log_loss"] == pytest.approx(-np.log(p[np.arange(300), y]).mean(), rel=1e-4)
    lo, hi = report["accuracy_ci95"]
    assert lo < report["metrics"]["accuracy"] < hi
    assert report["throughput_samples_per_s"] > 0 and report["machine"]["onnxruntime_version"]
    assert report["inputs"] == {"model_id": model_id, "datasets": {"test": ds_id, "eval": ds_id}}

    artifacts = api.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert [a["role"] for a in artifacts] == ["predictions"]
    content = api.get(f"/v1/artifacts/{artifacts[0]['id']}/content").content
    with np.load(io.BytesIO(content), allow_pickle=False) as saved:
        assert np.array_equal(saved["prediction"], pred) and np.array_equal(saved["label"], y)


def test_evaluate_regression_on_csv(api, worker, tmp_path) -> None:
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((4, 1)), np.array([0.5])
    x = rng.standard_normal((120, 4))
    y = (x @ w + b).ravel() + rng.normal(0, 0.3, 120)
    model_id = upload_model(api, onnx_models.linear(tmp_path / "reg.onnx", w, b, output="value"))
    ds_id = upload_dataset(api, data_files.csv(tmp_path / "reg.csv", x, y, label="target"), label="target")
    done = wait_job(api, submit(api, kind="evaluate", model_id=model_id, datasets={"eval": ds_id})["id"])
    assert done["status"] == "succeeded", done
    metrics = api.get(f"/v1/jobs/{done['id']}/report").json()["metrics"]
    pred = (x.astype(np.float32) @ w.astype(np.float32) + np.float32(0.5)).ravel().astype(np.float64)
    assert metrics["mse"] == pytest.approx(((pred - y) ** 2).mean(), rel=1e-4)
    assert metrics["mae"] == pytest.approx(np.abs(pred - y).mean(), rel=1e-4)
    assert metrics["r2"] == pytest.approx(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-4)


def test_benchmark_reports_latency_per_configuration(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.cnn(tmp_path / "cnn.onnx"))
    params = {"batch_sizes": [1, 4], "threads": [1], "runs": 20, "warmup_runs": 2}
    done = wait_job(api, submit(api, kind="benchmark", model_id=model_id, params=params)["id"])
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{done['id']}/report").json()
    assert report["input_source"] == "synthetic"
    assert [(r["batch_size"], r["threads"], r["runs"]) for r in report["results"]] == [(1, 1, 20), (4, 1, 20)]
    for r in report["results"]:
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # the report rounds throughput to 0.01 samples/s: over ~5,000 samples/s that is more than rel 1e-6
        expected = r["batch_size"] * 1000 / lat["mean"]
        assert r["throughput_samples_per_s"] == pytest.approx(expected, rel=1e-6, abs=0.005 + 1e-9)
    assert report["machine"]["logical_cpus"] >= 1 and "load_average_1m" in report["machine"]


def test_redelivered_message_for_a_finished_job_is_a_noop(api, worker, tmp_path, e2e_settings, db) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    done = wait_job(api, submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})["id"])
    assert done["status"] == "succeeded"
    Enqueuer.for_settings(e2e_settings).send(kind="benchmark", job_id=done["id"])
    worker.wait_for(f"job {done['id']} is already succeeded; redelivered message is a no-op")
    again = api.get(f"/v1/jobs/{done['id']}").json()
    assert (again["attempts"], again["finished_at"], again["status"]) == (1, done["finished_at"], "succeeded")


def test_cancel_a_queued_job_and_it_never_runs(api, worker, tmp_path, e2e_settings, db) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    real = api.app.state.enqueuer

    class Deferred:  # hold the message back so the job is certainly still queued when cancelled
        sent: list = []

        def send(self, **kw):
            self.sent.append(kw)

    api.app.state.enqueuer = Deferred()
    job = submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})
    api.app.state.enqueuer = real
    r = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    real.send(**Deferred.sent[0])
    worker.wait_for(f"job {job['id']} is already cancelled; redelivered message is a no-op")
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["attempts"] == 0
    assert api.get(f"/v1/jobs/{job['id']}/report").status_code == 409
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202  # cancelling again is harmless


def test_cancel_a_running_job_stops_it_within_seconds(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.cnn(tmp_path / "cnn.onnx"))
    params = {"batch_sizes": [64], "runs": 100000, "max_seconds_per_config": 120}
    job = submit(api, kind="benchmark", model_id=model_id, params=params)
    wait_job(api, job["id"], statuses=("running",))
    while api.get(f"/v1/jobs/{job['id']}").json()["stage"] in ("starting", "fetching inputs"):
        time.sleep(0.1)
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 409  # running: cancel first
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    cancelled_at = time.monotonic()
    worker.wait_for(f"job {job['id']}: cancelled or taken over, stopping", timeout=10)
    assert time.monotonic() - cancelled_at < 5
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    # the worker is free again: the next job runs
    nxt = submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})
    assert wait_job(api, nxt["id"])["status"] == "succeeded"
    assert api.post(f"/v1/jobs/{nxt['id']}/cancel").status_code == 409


def test_a_job_error_fails_cleanly_with_its_code(api, worker, tmp_path, e2e_settings) -> None:
    # labels outside the model's classes pass the submission checks (which see only the summary) and fail in the job
    x, y = data_files.classification(n=20, features=8, classes=3)
    model_id = upload_model(api, onnx_models.linear(tmp_path / "clf.onnx", np.ones((8, 3)), np.zeros(3)))
    ds_id = upload_dataset(api, data_files.npz(tmp_path / "d.npz", x=x, y=y + 5))
    done = wait_job(api, submit(api, kind="evaluate", model_id=model_id, datasets={"eval": ds_id})["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "incompatible_data" and "3 classes" in done["error"]["detail"]
    assert done["attempts"] == 1


def test_listing_and_filters(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    ids = [
        submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})["id"] for _ in range(3)
    ]
    for i in ids:
        wait_job(api, i)
    listed = api.get("/v1/jobs", params={"kind": "benchmark", "status": "succeeded", "limit": 2}).json()
    assert [j["id"] for j in listed["items"]] == ids[::-1][:2] and listed["next_cursor"]
    assert api.get("/v1/jobs", params={"status": "exploded"}).status_code == 422
    assert api.get("/v1/jobs", params={"kind": "evaluate"}).json()["items"] == []


def test_reconciler_resends_a_queued_job_whose_message_was_lost(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    real = api.app.state.enqueuer

    class Lost:  # the broker "loses" the message (as Redis without persistence does on a restart)
        def send(self, **kw):
            pass

    api.app.state.enqueuer = Lost()
    job = submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})
    api.app.state.enqueuer = real
    done = wait_job(api, job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    worker.wait_for(f"job {job['id']} was queued with no message in measure; sent again")


def test_reconciler_requeues_a_running_job_whose_worker_vanished(api, worker, tmp_path, db) -> None:
    """A row left `running` with a stale heartbeat (its worker died and no broker will redeliver)."""
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    real = api.app.state.enqueuer

    class Held:
        def send(self, **kw):
            pass

    api.app.state.enqueuer = Held()
    job = submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1], "runs": 5})
    api.app.state.enqueuer = real
    db.execute(
        sa.text(
            "UPDATE jobs SET status = 'running', attempts = 1, heartbeat_at = now() - interval '1 hour', "
            "started_at = now() - interval '1 hour' WHERE id = :id"
        ),
        {"id": job["id"]},
    )
    db.commit()
    done = wait_job(api, job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    worker.wait_for(f"job {job['id']}: worker stopped responding during attempt 1; re-queued")


def test_report_pages_signed_links_and_deletion(api, worker, classifier, tmp_path, e2e_settings, db) -> None:
    from service.jobs import links

    w, b, x, y, path = classifier
    model_id = upload_model(api, path)
    ds_id = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x, y=y))
    job = wait_job(api, submit(api, kind="evaluate", model_id=model_id, datasets={"eval": ds_id})["id"])
    bench = wait_job(
        api, submit(api, kind="benchmark", model_id=model_id, params={"batch_sizes": [1, 8], "runs": 10})["id"]
    )
    assert job["report_url"] and bench["report_url"]

    anonymous = TestClient(api.app)  # a browser: no Authorization header
    page = anonymous.get(job["report_url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Evaluation: classification" in page.text and "Confusion matrix" in page.text and "<svg" in page.text
    assert "<script" not in page.text and "https://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    bench_page = anonymous.get(bench["report_url"]).text
    assert "Latency by batch size" in bench_page and bench_page.count("<polyline") >= 3

    url = f"/v1/jobs/{job['id']}/report.html"
    assert anonymous.get(url).status_code == 401
    assert anonymous.get(url, params={"token": "9999999999.deadbeef"}).status_code == 401
    expired = links.make_token(links.secret_key(e2e_settings), job["id"], "ten_x", ttl_s=-10)
    assert anonymous.get(url, params={"token": expired}).status_code == 401
    other_jobs_token = bench["report_url"].split("token=")[1]
    assert anonymous.get(url, params={"token": other_jobs_token}).status_code == 401
    assert api.get(url).status_code == 200  # the API key works too

    artifacts = api.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert api.get(f"/v1/artifacts/{artifacts[0]['id']}/content").status_code == 404
    blob_rows = db.execute(sa.text("SELECT count(*) FROM blobs WHERE sha256 = :s"), {"s": artifacts[0]["sha256"]})
    assert blob_rows.scalar() == 0


def test_quantize_static_registers_the_quantized_model(api, worker, tmp_path) -> None:
    import onnxruntime as ort

    model_path = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=64, hidden=128, n_out=10)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 64)).astype(np.float32)
    y = ort.InferenceSession(str(model_path)).run(None, {"x": x})[0].argmax(axis=1)
    model_id = upload_model(api, model_path)
    calib = upload_dataset(api, data_files.npz(tmp_path / "calib.npz", x=x[:150]))
    evald = upload_dataset(api, data_files.npz(tmp_path / "eval.npz", x=x[150:], y=y[150:]))
    params = {"mode": "static", "runs": 5, "batch_sizes": [1, 8]}
    job = submit(api, kind="quantize", model_id=model_id, datasets={"calibration": calib, "test": evald}, params=params)
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["comparison"]["metrics"]["accuracy"]["candidate"] > 0.9
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["source_job_id"] == job["id"] and produced["name"] == "mlp-static"
    assert "DequantizeLinear" in produced["info"]["op_histogram"]
    content = api.get(f"/v1/models/{produced['id']}/content").content
    assert len(content) == report["comparison"]["size_bytes"]["candidate"]
    assert [a["role"] for a in api.get(f"/v1/jobs/{job['id']}/artifacts").json()] == ["model"]
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and "Quantization: static" in page.text
    # a chain is just another job: quantizing the quantized model again is refused at submit
    again = api.post("/v1/jobs", json={"kind": "quantize", "model_id": produced["id"], "params": {"mode": "dynamic"}})
    assert again.status_code == 422 and again.json()["type"].endswith("/already-quantized")


def test_quantize_bad_requests(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    narrow = upload_dataset(api, data_files.npz(tmp_path / "n.npz", x=np.ones((10, 3))))
    r = api.post("/v1/jobs", json={"kind": "quantize", "model_id": model_id, "params": {"mode": "static"}})
    assert r.status_code == 422 and "calibration" in r.json()["detail"]
    r = api.post(
        "/v1/jobs",
        json={
            "kind": "quantize",
            "model_id": model_id,
            "datasets": {"calibration": narrow},
            "params": {"mode": "static"},
        },
    )
    assert r.status_code == 422 and r.json()["type"].endswith("/incompatible-data")
    r = api.post("/v1/jobs", json={"kind": "quantize", "model_id": model_id, "params": {"mode": "auto"}})
    assert r.status_code == 422 and "eval" in r.json()["detail"] and r.json()["type"].endswith("/missing-dataset")
    for bad in ({"max_accuracy_drop": -0.1}, {"objective": "speed"}, {"auto_modes": []}, {"max_trials": 0}):
        r = api.post("/v1/jobs", json={"kind": "quantize", "model_id": model_id, "params": {"mode": "auto", **bad}})
        assert r.status_code == 422 and f"params.{next(iter(bad))}" in r.json()["detail"], (bad, r.json())
    r = api.post(
        "/v1/jobs", json={"kind": "quantize", "model_id": model_id, "params": {"mode": "auto", "max_seconds": 1e6}}
    )
    assert r.status_code == 422 and "job time limit" in r.json()["detail"]


def test_quantize_auto_reports_every_trial_and_registers_the_choice(api, worker, tmp_path) -> None:
    import onnxruntime as ort

    model_path = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=64, hidden=128, n_out=10)
    x = np.random.default_rng(2).standard_normal((300, 64)).astype(np.float32)
    y = ort.InferenceSession(str(model_path)).run(None, {"x": x})[0].argmax(axis=1)
    model_id = upload_model(api, model_path)
    train = upload_dataset(api, data_files.npz(tmp_path / "train.npz", x=x[:150]))
    val = upload_dataset(api, data_files.npz(tmp_path / "val.npz", x=x[150:], y=y[150:]))
    params = {"mode": "auto", "runs": 5, "batch_sizes": [1], "trial_runs": 5, "max_trials": 4, "objective": "size"}
    datasets = {"train": train, "validation": val}
    job = submit(api, kind="quantize", model_id=model_id, datasets=datasets, params=params)
    done = wait_job(api, job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    auto = report["auto"]
    assert len(auto["trials"]) == 4 and "trial budget" in auto["stopped_because"]
    chosen = auto["trials"][auto["chosen"]]
    assert auto["goal_met"] and chosen["meets_goal"] and chosen["size_ratio"] < 0.98
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["name"] == f"mlp-auto-{chosen['mode']}" and produced["source_job_id"] == job["id"]
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and f"auto, chose {chosen['mode']}" in page.text and "Pareto front" in page.text
    assert report["machine"]["int8_isa"] in page.text
    # /v1/kinds names the CPU every live worker measures on: the one that ran this job among them
    quantize = next(k for k in api.get("/v1/kinds").json() if k["name"] == "quantize")
    assert report["machine"]["int8_isa"] in {w["int8_isa"] for w in quantize["workers"]}
    assert all(w["cpu_flags"] is not None and w["name"] for w in quantize["workers"])

    # a goal nothing meets: the original is kept, nothing registered, the best attempt downloadable
    models_before = len(api.get("/v1/models").json()["items"])
    job = submit(
        api, kind="quantize", model_id=model_id, datasets=datasets,
        params={**params, "max_trials": 1, "min_output_cosine": 1.0},
    )  # fmt: skip
    done = wait_job(api, job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["handed_back"] == "original" and report["auto"]["kept_original"] and "output_model_id" not in report
    assert len(api.get("/v1/models").json()["items"]) == models_before
    arts = api.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert [a["role"] for a in arts if a["role"] != "report"] == ["best_attempt"]
    page = TestClient(api.app).get(done["report_url"])
    assert "auto, kept the original" in page.text and "The original is kept." in page.text


def test_diagnose_through_the_api(api, worker, classifier, tmp_path) -> None:
    w, b, x, y, path = classifier
    model_id = upload_model(api, path)
    clean = (x @ w + b).argmax(axis=1)
    train = upload_dataset(api, data_files.npz(tmp_path / "train.npz", x=x[:150], y=clean[:150]))
    val = upload_dataset(api, data_files.npz(tmp_path / "val.npz", x=x[150:], y=y[150:]))
    history = upload_dataset(api, data_files.keras_history(tmp_path / "history.json", epochs=8), kind="history")
    datasets = {"train": train, "validation": val, "history": history}
    job = submit(api, kind="diagnose", model_id=model_id, datasets=datasets, params={"bootstrap_resamples": 200})
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["kind"] == "diagnose" and report["verdict"] == "overfit"  # 100% on train, ~2/3 on validation
    assert report["splits"]["train"]["metrics"]["accuracy"] == 1.0 and report["history"]["epochs"] == 8
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and "Fit diagnosis: overfit" in page.text
    # Bad requests: no validation set, a history given as samples, unlabeled data.
    r = api.post("/v1/jobs", json={"kind": "diagnose", "model_id": model_id, "datasets": {"train": train}})
    assert r.status_code == 422 and "validation" in r.json()["detail"]
    bad = {"train": train, "validation": val, "history": train}
    r = api.post("/v1/jobs", json={"kind": "diagnose", "model_id": model_id, "datasets": bad})
    assert r.status_code == 422 and "history" in r.json()["detail"]
    unlabeled = upload_dataset(api, data_files.npz(tmp_path / "u.npz", x=x))
    r = api.post(
        "/v1/jobs", json={"kind": "diagnose", "model_id": model_id, "datasets": {"train": unlabeled, "validation": val}}
    )
    assert r.status_code == 422 and "labels" in r.json()["detail"]


def test_prune_registers_the_pruned_model(api, worker, tmp_path) -> None:
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "mlp.onnx", n_in=64, hidden=128, n_out=10))
    params = {"method": "magnitude", "ratio": 0.5, "runs": 5, "batch_sizes": [1]}
    job = submit(api, kind="prune", model_id=model_id, params=params)
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["name"] == "mlp-magnitude" and produced["source_job_id"] == job["id"]
    assert report["gzip_size_bytes"]["pruned"] < report["gzip_size_bytes"]["original"]
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and "Pruning: magnitude" in page.text and "Per layer" in page.text
    r = api.post("/v1/jobs", json={"kind": "prune", "model_id": model_id, "params": {"method": "magnitude"}})
    assert r.status_code == 422 and "ratio" in r.json()["detail"]
    r = api.post(
        "/v1/jobs", json={"kind": "prune", "model_id": model_id, "params": {"method": "magnitude", "ratio": 1.5}}
    )
    assert r.status_code == 422 and "params.ratio" in r.json()["detail"]


def test_distill_through_the_api(api, worker, tmp_path) -> None:
    pytest.importorskip("torch", reason="the train extra")
    import onnxruntime as ort

    model_path = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=16, hidden=64, n_out=4)
    x = np.random.default_rng(3).standard_normal((300, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model_path)).run(None, {"x": x})[0].argmax(axis=1)
    model_id = upload_model(api, model_path)
    train = upload_dataset(api, data_files.npz(tmp_path / "train.npz", x=x[:200], y=y[:200]))
    val = upload_dataset(api, data_files.npz(tmp_path / "val.npz", x=x[200:], y=y[200:]))
    params = {"student": {"auto": {"ratio": 0.5}}, "epochs": 3, "runs": 5, "batch_sizes": [1]}
    job = submit(api, kind="distill", model_id=model_id, datasets={"train": train, "validation": val}, params=params)
    done = wait_job(api, job["id"], timeout=180)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["epochs_run"] == 3 and report["parameters"]["student"] < report["parameters"]["teacher"]
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["name"] == "mlp-distilled" and produced["source_job_id"] == job["id"]
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and "Distillation: student at 0.5" in page.text and "Learning curves" in page.text
    unlabeled = upload_dataset(api, data_files.npz(tmp_path / "u.npz", x=x))
    r = api.post("/v1/jobs", json={"kind": "distill", "model_id": model_id, "datasets": {"train": unlabeled}})
    assert r.status_code == 422 and "labels" in r.json()["detail"]
    # 1,000 epochs of a 1M-MAC model on 200 samples cannot fit the 60 s limit of these tests: refused with the estimate.
    wide = upload_model(api, onnx_models.mlp(tmp_path / "wide.onnx", n_in=256, hidden=4096, n_out=4))
    wide_train = upload_dataset(api, data_files.npz(tmp_path / "w.npz", x=np.zeros((200, 256), np.float32), y=y[:200]))
    body = {"kind": "distill", "model_id": wide, "datasets": {"train": wide_train}}
    r = api.post("/v1/jobs", json={**body, "params": {"epochs": 1000, "monitor": "loss"}})
    assert (
        r.status_code == 422
        and r.json()["type"].endswith("/too-long")
        and "job time limit of 60 s" in r.json()["detail"]
    )
    r = api.post("/v1/jobs", json={**body, "params": {"epochs": 2, "monitor": "loss"}})
    assert r.status_code == 202  # 2 epochs fit
    assert api.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code in (200, 202)


def test_prune_then_distill_the_pruned_model_through_the_api(api, worker, tmp_path) -> None:
    """The chain users build: a prune job's output becomes the distill job's student (student_model_id)."""
    pytest.importorskip("torch", reason="the train extra")
    import onnxruntime as ort

    model_path = onnx_models.mlp(tmp_path / "mlp.onnx", n_in=16, hidden=64, n_out=4)
    x = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model_path)).run(None, {"x": x})[0].argmax(axis=1)
    teacher = upload_model(api, model_path)
    train = upload_dataset(api, data_files.npz(tmp_path / "train.npz", x=x[:200], y=y[:200]))
    val = upload_dataset(api, data_files.npz(tmp_path / "val.npz", x=x[200:], y=y[200:]))
    pruned = submit(api, kind="prune", model_id=teacher, params={"method": "structured", "ratio": 0.5, "runs": 5})
    assert wait_job(api, pruned["id"], timeout=120)["status"] == "succeeded"
    student = api.get(f"/v1/jobs/{pruned['id']}/report").json()["output_model_id"]
    params = {"student_model_id": student, "epochs": 3, "runs": 5, "batch_sizes": [1]}
    job = submit(api, kind="distill", model_id=teacher, datasets={"train": train, "validation": val}, params=params)
    done = wait_job(api, job["id"], timeout=180)
    assert done["status"] == "succeeded", {k: v for k, v in done.items() if "error" in k}
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["student"]["made_by"] == f"model {student}" and report["epochs_run"] == 3
    # Bad students: one that does not exist (404), one with another signature (422).
    body = {"kind": "distill", "model_id": teacher, "datasets": {"train": train, "validation": val}}
    r = api.post("/v1/jobs", json={**body, "params": {"student_model_id": "mdl_nope"}})
    assert r.status_code == 404 and "mdl_nope" in r.json()["detail"]
    other = upload_model(api, onnx_models.mlp(tmp_path / "other.onnx", n_in=16, hidden=8, n_out=5))
    r = api.post("/v1/jobs", json={**body, "params": {"student_model_id": other}})
    assert r.status_code == 422 and r.json()["type"].endswith("/incompatible-model") and "outputs" in r.json()["detail"]


def test_a_worker_publishes_its_queues_and_capabilities_and_withdraws_them(start_worker, worker, db) -> None:
    """The rows the API reads to refuse a job no live worker can run (e.g. distill without PyTorch)."""
    import sqlalchemy as sa

    from engine.machine import capabilities
    from service.fleet.tables import WorkerPresence

    extra = start_worker()

    def rows() -> dict[str, WorkerPresence]:
        db.expire_all()
        return {r.name: r for r in db.scalars(sa.select(WorkerPresence)) if r.name.startswith(f"{extra.name}@")}

    deadline = time.monotonic() + 10
    while not rows() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rows()) == 1, rows()
    ((name, row),) = rows().items()
    assert row.queues == ["default", "measure"]
    assert row.capabilities == capabilities()  # "torch" where the train extra is installed (CI)
    extra.stop()
    assert name not in rows()  # a clean shutdown removes it; a killed worker's row ages out (presence_ttl_s)


def test_compare_two_models_side_by_side(api, worker, tmp_path) -> None:
    x, y = data_files.classification(n=120, features=64)
    a = upload_model(api, onnx_models.mlp(tmp_path / "a.onnx", hidden=64, seed=0))
    b = upload_model(api, onnx_models.mlp(tmp_path / "b.onnx", hidden=16, seed=1))
    narrow = upload_model(api, onnx_models.mlp(tmp_path / "n.onnx", n_in=32))
    ds = upload_dataset(api, data_files.npz(tmp_path / "e.npz", x=x, y=y))
    params = {"other_model_id": b, "runs": 5, "batch_sizes": [1, 8], "threads": [1]}
    job = submit(api, kind="compare", model_id=a, datasets={"eval": ds}, params=params)
    done = wait_job(api, job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    c = report["comparison"]
    assert report["kind"] == "compare" and report["other_model_id"] == b
    assert c["size_bytes"]["candidate"] < c["size_bytes"]["original"]
    assert [(p["batch_size"], p["threads"]) for p in c["latency_ms"]] == [(1, 1), (8, 1)]
    assert c["primary_metric"] == "accuracy" and c["eval_samples"] == 120
    assert 0 <= c["fidelity"][0]["top1_agreement"] < 1  # two different random networks disagree somewhere
    assert report["parameters"]["candidate"] < report["parameters"]["original"]
    assert api.get(f"/v1/jobs/{job['id']}/artifacts").json() == []  # it makes no model
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and f"vs {b}" in page.text and "Output fidelity" in page.text

    for body, status, words in [
        ({"params": {}}, 422, "params.other_model_id"),
        ({"params": {"other_model_id": "mod_nope"}}, 404, "mod_nope"),
        ({"params": {"other_model_id": narrow}}, 422, "inputs"),
        ({"params": {"other_model_id": b, "runs": 1}}, 422, "params.runs"),
    ]:
        r = api.post("/v1/jobs", json={"kind": "compare", "model_id": a, **body})
        assert r.status_code == status and words in r.json()["detail"], r.text


def test_optimize_through_the_api_registers_the_winner(api, worker, tmp_path) -> None:
    from tests import digits

    f = digits.files(tmp_path, hidden=128)
    model_id = upload_model(api, f["model"])
    ds = {role: upload_dataset(api, f[role]) for role in ("train", "validation", "test")}
    # objective size: what wins does not depend on this machine's timing noise (latency must beat the original by
    # more than the tie band, which a digits MLP's microseconds may or may not do)
    params = {
        "ratios": [0.5], "distill_epochs": 10, "runs": 10, "quantize_modes": ["dynamic", "fp16"], "objective": "size",
    }  # fmt: skip
    job = submit(api, kind="optimize", model_id=model_id, datasets=ds, params=params)
    done = wait_job(api, job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["goal_met"] and report["recommended"] > 0 and report["fit"] is not None
    produced = api.get(f"/v1/models/{report['output_model_id']}").json()
    assert produced["name"] == "digits_mlp-optimized" and produced["source_job_id"] == job["id"]
    assert produced["size_bytes"] == report["recommended_model"]["size_bytes"] < report["original"]["size_bytes"]
    page = TestClient(api.app).get(done["report_url"])
    assert page.status_code == 200 and "Every trial" in page.text
    for extra, words in [
        ({"methods": ["shrink"]}, "params.methods"),
        ({"max_seconds": 1}, "cannot run anything"),
        ({"max_seconds": 10_000}, "job time limit"),
    ]:
        r = api.post("/v1/jobs", json={"kind": "optimize", "model_id": model_id, "datasets": ds, "params": extra})
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    r = api.post("/v1/jobs", json={"kind": "optimize", "model_id": model_id, "datasets": {"train": ds["train"]}})
    assert r.status_code == 422 and "eval" in r.json()["detail"]

    # cancelled while a trial runs: it stops within seconds and registers nothing
    job = submit(api, kind="optimize", model_id=model_id, datasets=ds, params={**params, "distill_epochs": 200})
    deadline = time.monotonic() + 60
    while "trial 3/" not in api.get(f"/v1/jobs/{job['id']}").json()["stage"] and time.monotonic() < deadline:
        time.sleep(0.05)  # trial 3 is the first prune + distill
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    worker.wait_for(f"job {job['id']}: cancelled or taken over, stopping", timeout=10)
    assert wait_job(api, job["id"])["status"] == "cancelled"
    assert api.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
