"""The embedded default as a user runs it: `onnxsmith serve` in an empty folder, no configuration, no servers.
Upload, evaluate, read the report over HTTP; a job queued while no worker ran finishes after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests import data_files, onnx_models
from tests.conftest import free_port


class Serve:
    def __init__(self, folder: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSMITH_")}
        self.port = free_port()
        self.log = open(folder / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onnxsmith.cli", "serve", "--port", str(self.port), *args],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError((folder / "serve.log").read_text())

    def first_key(self) -> str:
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def _embedded_workers(serve_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"embedded-{serve_pid}@".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _wait(http: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


def test_serve_upload_evaluate_report_and_restart(tmp_path: Path) -> None:
    folder = tmp_path / "laptop"
    folder.mkdir()
    x, y = data_files.classification(n=100, features=64)

    first = Serve(folder, "--no-worker")
    key = first.first_key()
    assert key.startswith("osk_")
    http = httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    model = http.post("/v1/models", files={"file": ("mlp.onnx", onnx_models.mlp(tmp_path / "m.onnx").read_bytes())})
    assert model.status_code == 201, model.text
    ds = http.post("/v1/datasets", files={"file": ("d.npz", data_files.npz(tmp_path / "d.npz", x=x, y=y).read_bytes())})
    assert ds.status_code == 201, ds.text
    body = {"kind": "evaluate", "model_id": model.json()["id"], "datasets": {"eval": ds.json()["id"]}}
    queued = http.post("/v1/jobs", json=body).json()
    time.sleep(1)
    assert http.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"  # no worker yet
    first.stop()

    second = Serve(folder)  # same folder: same database, store and broker; a worker this time
    http = httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        done = _wait(http, queued["id"])
        assert done["status"] == "succeeded", done
        report = http.get(f"/v1/jobs/{queued['id']}/report").json()
        assert report["sample_count"] == 100 and 0 <= report["metrics"]["accuracy"] <= 1
        again = _wait(http, http.post("/v1/jobs", json=body).json()["id"])
        assert again["status"] == "succeeded"
        assert _embedded_workers(second.proc.pid), "serve should run a worker beside the API"
    finally:
        pid = second.proc.pid
        second.stop()
    deadline = time.monotonic() + 30
    while _embedded_workers(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _embedded_workers(pid) == [], "stopping serve stops its worker"
    assert (folder / "onnxsmith-data" / "onnxsmith.db").exists()
    console = (folder / "serve.log").read_text()
    # a quiet start: the key (first start) or how to make one (restart) and the data folder, then logs only
    assert "API keys exist in this data folder" in console and "onnxsmith keys create" in console
    assert f"data folder: {folder / 'onnxsmith-data'}" in console
    for noise in ("SecurityWarning", "No hostname was supplied", "RuntimeWarning", "-------------- [queues]"):
        assert noise not in console, f"{noise!r} in serve's console:\n{console}"
