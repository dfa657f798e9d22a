"""A worker SIGKILLed mid-job: the job completes exactly once on another worker, or fails with worker_lost
once it has used its deliveries. Redis redelivers the unacknowledged message after the visibility timeout."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from engine.sandbox import is_alive, process_identity
from tests import onnx_models
from tests.e2e.conftest import wait_job
from tests.e2e.test_jobs import submit, upload_model
from tests.faults.test_recovery import record

VISIBILITY_TIMEOUT_S = 6


def _start_long_job(api, tmp_path, seconds: float = 4):
    model_id = upload_model(api, onnx_models.cnn(tmp_path / "cnn.onnx"))
    params = {"batch_sizes": [16], "runs": 100000, "max_seconds_per_config": seconds}
    job = submit(api, kind="benchmark", model_id=model_id, params=params)
    wait_job(api, job["id"], statuses=("running",), timeout=30)
    deadline = time.monotonic() + 30
    while "measuring" not in api.get(f"/v1/jobs/{job['id']}").json()["stage"]:
        assert time.monotonic() < deadline, "the job never started measuring within 30 s"
        time.sleep(0.1)
    return job


def _descendants(pid: int) -> dict[int, list[int]]:
    """{pid: [pid, start time]} of every process below `pid` (from /proc's parent links)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = process_identity(child)
                frontier.append(child)
    return found


def test_killed_worker_job_completes_once_on_another(api, start_worker, tmp_path) -> None:
    first = start_worker()
    job = _start_long_job(api, tmp_path)
    first.kill()
    killed = time.monotonic()
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    second = start_worker()
    started = time.monotonic()
    done = wait_job(api, job["id"], timeout=90)
    record("worker killed mid-job, from the kill (a new worker starting)", time.monotonic() - killed)
    record("worker killed mid-job, from the other worker's start", time.monotonic() - started)
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


def test_a_killed_workers_job_child_stops_and_its_scratch_is_collected(api, start_worker, tmp_path, e2e_env) -> None:
    """kill -9 of the worker's main process alone: the job's sandboxed child (its own session, so no signal to the
    worker's group reaches it) used to go on computing for up to 43 s on the measuring machine, and the killed
    attempt's scratch folder was never removed."""
    first = start_worker()
    job = _start_long_job(api, tmp_path, seconds=25)
    below = _descendants(first.proc.pid)
    children = [ident for pid, ident in below.items() if os.getsid(pid) == pid]  # the sandboxed job child
    assert children, f"no sandboxed child below the worker: {below}"
    scratch = sorted((Path(e2e_env["ONNXSMITH_DATA_DIR"]) / "tmp").glob(f"{job['id']}-*"))
    assert len(scratch) == 1, scratch
    os.kill(first.proc.pid, signal.SIGKILL)  # the main process only, as an OOM kill would
    first.proc.wait(10)
    deadline = time.monotonic() + 10
    while any(is_alive(ident) for ident in below.values()):
        assert time.monotonic() < deadline, f"still running 10 s after the worker died: {below}"
        time.sleep(0.1)
    second = start_worker()  # collects the scratch folders of killed workers when it starts
    assert not scratch[0].exists(), "the killed attempt's scratch folder is still there"
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
    wait_job(api, job["id"], timeout=30)
    second.stop()
