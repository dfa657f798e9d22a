"""Recovery from a broker or database outage, end to end on the test's own Redis and PostgreSQL with real worker
processes: nothing is lost and each job runs once. The seconds from the part's return to the job's success are
measured (bench/recovery.py runs these tests several times and tabulates them for the README)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from tests import onnx_models
from tests.e2e.conftest import wait_job
from tests.e2e.test_jobs import submit, upload_model

VISIBILITY_TIMEOUT_S = 20


def record(fault: str, seconds: float) -> None:
    """One measured recovery, appended to $ONNXSMITH_RECOVERY_LOG when it is set (bench/recovery.py)."""
    print(f"recovery after {fault}: {seconds:.2f} s")
    if os.environ.get("ONNXSMITH_RECOVERY_LOG"):
        with open(os.environ["ONNXSMITH_RECOVERY_LOG"], "a") as out:
            out.write(json.dumps({"fault": fault, "seconds": round(seconds, 3)}) + "\n")


def _benchmark_body(model_id: str, seconds: float = 0.0) -> dict:
    params = {"batch_sizes": [1], "runs": 100000 if seconds else 5}
    if seconds:
        params["max_seconds_per_config"] = seconds
    return {"kind": "benchmark", "model_id": model_id, "params": params}


def _wait_stage(api, job_id: str, words: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while words not in (api.get(f"/v1/jobs/{job_id}").json().get("stage") or ""):
        assert time.monotonic() < deadline, f"job {job_id} never reached stage {words!r} within {timeout} s"
        time.sleep(0.1)


def test_a_job_submitted_while_redis_is_down_runs_once_it_is_back(api, start_worker, redis_server, tmp_path) -> None:
    """Redis killed and restarted empty (no persistence: every message lost). The submit answers 503 with the job
    saved; once Redis is back the worker reconnects by itself and the reconciler sends the job's message again."""
    worker = start_worker()
    try:
        model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
        redis_server.stop()
        key = {"Idempotency-Key": uuid.uuid4().hex}
        r = api.post("/v1/jobs", json=_benchmark_body(model_id), headers=key)
        assert r.status_code == 503 and r.json()["type"].endswith("/broker-unavailable"), r.text
        job_id = r.json()["job_id"]
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"  # saved, not lost
        redis_server.start()
        back = time.monotonic()
        done = wait_job(api, job_id, timeout=90)
        record("Redis killed, restarted empty", time.monotonic() - back)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        replay = api.post("/v1/jobs", json=_benchmark_body(model_id), headers=key)
        assert replay.status_code == 202 and replay.json()["id"] == job_id  # the client's retry: the same job
        assert worker.text().count(f"job {job_id} succeeded") == 1
    finally:
        worker.stop()


def test_a_job_taken_while_the_database_is_down_runs_once_it_is_back(api, start_worker, cluster, tmp_path) -> None:
    """The worker takes the message while PostgreSQL is down: the claim fails and the task is retried with
    backoff (it used to be acknowledged and dropped, leaving the job queued with no message)."""
    model_id = upload_model(api, onnx_models.mlp(tmp_path / "m.onnx"))
    job = submit(api, **_benchmark_body(model_id))  # no worker yet: the message waits in Redis
    cluster.stop()
    worker = start_worker()
    try:
        worker.wait_for(f"job {job['id']}: could not claim it", timeout=60)
        cluster.start()
        cluster.wait_ready()
        back = time.monotonic()
        done = wait_job(api, job["id"], timeout=120)
        record("PostgreSQL down when a worker takes a job", time.monotonic() - back)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
    finally:
        cluster.start_if_stopped()
        worker.stop()


def test_a_database_outage_in_the_middle_of_a_job_costs_at_most_one_more_attempt(
    api, start_worker, cluster, tmp_path
) -> None:
    """PostgreSQL stopped for a few seconds while a job runs: heartbeats fail and are retried; the job succeeds
    once, in its first attempt or (when the outage hit its save) in a second."""
    worker = start_worker()
    try:
        model_id = upload_model(api, onnx_models.cnn(tmp_path / "cnn.onnx"))
        job = submit(api, **_benchmark_body(model_id, seconds=4))
        _wait_stage(api, job["id"], "measuring")
        cluster.stop()
        time.sleep(3)
        cluster.start()
        cluster.wait_ready()
        back = time.monotonic()
        done = wait_job(api, job["id"], timeout=120)
        record("PostgreSQL down for 3 s during a job", time.monotonic() - back)
        assert done["status"] == "succeeded" and done["attempts"] <= 2, done
        assert worker.text().count(f"job {job['id']} succeeded") == 1
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        assert len(report["results"]) == 1
    finally:
        cluster.start_if_stopped()
        worker.stop()


def test_recovery_log_is_json_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ONNXSMITH_RECOVERY_LOG", str(tmp_path / "log"))
    record("x", 1.23456)
    assert json.loads((tmp_path / "log").read_text()) == {"fault": "x", "seconds": 1.235}
