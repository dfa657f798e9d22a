"""A worker SIGKILLed mid-job: the job completes exactly once on another worker, or fails with worker_lost
once it has used its deliveries. Redis redelivers the unacknowledged message after the visibility timeout."""

from __future__ import annotations

import time

from tests import onnx_models
from tests.e2e.conftest import wait_job
from tests.e2e.test_jobs import submit, upload_model

REDIS_DB = 12
VISIBILITY_TIMEOUT_S = 6


def _start_long_job(api, tmp_path):
    model_id = upload_model(api, onnx_models.cnn(tmp_path / "cnn.onnx"))
    params = {"batch_sizes": [16], "runs": 100000, "max_seconds_per_config": 4}
    job = submit(api, kind="benchmark", model_id=model_id, params=params)
    wait_job(api, job["id"], statuses=("running",), timeout=30)
    while "measuring" not in api.get(f"/v1/jobs/{job['id']}").json()["stage"]:
        time.sleep(0.1)
    return job


def test_killed_worker_job_completes_once_on_another(api, start_worker, tmp_path) -> None:
    first = start_worker()
    job = _start_long_job(api, tmp_path)
    first.kill()
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    second = start_worker()
    done = wait_job(api, job["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert len(report["results"]) == 1
    assert f"job {job['id']} (benchmark): attempt 2 started" in second.text()
    assert f"job {job['id']} succeeded in attempt 2" in second.text()
    second.stop()


def test_job_fails_with_worker_lost_after_the_cap(api, start_worker, tmp_path) -> None:
    first = start_worker(ONNXSMITH_JOB_MAX_ATTEMPTS="1")
    job = _start_long_job(api, tmp_path)
    first.kill()
    second = start_worker(ONNXSMITH_JOB_MAX_ATTEMPTS="1")
    done = wait_job(api, job["id"], timeout=90)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_lost" and done["attempts"] == 1
    assert "worker was lost 1 time" in done["error"]["detail"]
    second.stop()
