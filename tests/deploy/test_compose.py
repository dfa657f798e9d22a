"""The image and the compose deployment, built and brought up in a Docker engine of the test's own: the base
stand-in where python:3.11-slim cannot be pulled (deploy/base-image.sh), PostgreSQL, Redis and an S3 server from
deploy/ci/ in place of the images that cannot be pulled (docker-compose.ci.yml), the image with and without PyTorch.
Then, through the published API port: a key from `compose run --rm api onnxsmith keys create`, uploads, evaluate and
quantize jobs, a worker restarted mid-job, two workers, and down / up with the data kept in the volumes.

Skipped, with the reason printed, where dockerd cannot start (not root, not installed, refused by the kernel)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests import data_files, onnx_models
from tests.conftest import free_port
from tests.deploy.engine import CACHE, Compose, Engine, Unavailable

pytestmark = pytest.mark.deploy
ROOT = Path(__file__).resolve().parents[2]
TORCH_INDEX = "https://download.pytorch.org/whl/cpu/torch/"


def _timed(measured: dict, name: str, fn):
    started = time.monotonic()
    out = fn()
    measured[f"{name}_s"] = round(time.monotonic() - started, 1)
    return out


def _base_image(engine: Engine) -> str:
    """python:3.11-slim when it can be pulled, else the debootstrap stand-in (cached by its inputs' digest)."""
    if engine.docker("image", "inspect", "python:3.11-slim", check=False).returncode == 0:
        return "python:3.11-slim"
    if engine.docker("pull", "python:3.11-slim", check=False, timeout=300).returncode == 0:
        return "python:3.11-slim"
    if shutil.which("debootstrap") is None:
        raise Unavailable("python:3.11-slim cannot be pulled and debootstrap (Debian package) is not installed")
    run = subprocess.run(
        ["bash", str(ROOT / "deploy" / "base-image.sh")], env=engine.env, capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def _torch_wheel() -> str | None:
    """The CPU wheel's file name, put in deploy/wheels/, when PyTorch's index cannot be reached; None when it can."""
    try:
        urllib.request.urlopen(TORCH_INDEX, timeout=10)
        return None
    except OSError:
        pass
    found = [os.environ.get("ONNXSMITH_TORCH_WHEEL", ""), *glob("/opt/wheels/torch-2.13.0+cpu-cp311-*.whl")]
    wheel = next((Path(f) for f in found if f and Path(f).is_file()), None)
    if wheel is None:
        raise Unavailable("PyTorch's CPU index is unreachable and no torch 2.13.0 CPU wheel is on disk")
    target = ROOT / "deploy" / "wheels" / wheel.name
    if not target.exists():
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy(wheel, target)
    return wheel.name


def _build(engine: Engine, base: str, measured: dict) -> None:
    for service in ("postgres", "redis", "s3"):
        context = str(ROOT / "deploy" / "ci" / service)
        engine.docker(
            "build",
            "-q",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-t",
            f"onnxsmith-ci/{service}:latest",
            context,
        )
    wheel = None
    for tag in ("slim", "latest"):  # the wheel joins the build context for the image that installs it only
        if tag == "latest":
            wheel = _torch_wheel()
        extra = ["--build-arg", "WITH_TRAIN=false"] if tag == "slim" else ["--build-arg", f"TORCH_WHEEL={wheel or ''}"]
        args = ["build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", *extra]

        def build(args: list[str] = args, tag: str = tag) -> None:
            # the build stage tagged, not left dangling: it is the legacy builder's cache of the dependencies
            engine.docker(*args, "--target", "build", "-t", f"onnxsmith-build:{tag}", str(ROOT), timeout=1800)
            engine.docker(*args, "-t", f"onnxsmith:{tag}", str(ROOT), timeout=1800)

        _timed(measured, f"build_{tag}", build)
        size = engine.docker("image", "inspect", "-f", "{{.Size}}", f"onnxsmith:{tag}").stdout
        measured[f"image_{tag}_mb"] = round(int(size) / 1e6)
    measured["torch_from"] = f"deploy/wheels/{wheel}" if wheel else TORCH_INDEX


class Deployment:
    def __init__(self, compose: Compose, port: int, measured: dict) -> None:
        self.compose, self.port, self.measured = compose, port, measured
        self.url = f"http://127.0.0.1:{port}"
        self.http: httpx.Client | None = None

    def wait_ready(self, timeout: float = 180) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        logs = self.compose("logs", "--tail", "30", check=False).stdout
        raise AssertionError(f"the API was not ready within {timeout:.0f} s:\n{logs[-5000:]}")

    def up(self) -> float:
        started = time.monotonic()
        self.compose("up", "-d", timeout=600)
        self.wait_ready()
        return round(time.monotonic() - started, 1)

    def create_key(self) -> None:
        run = self.compose("run", "--rm", "api", "onnxsmith", "keys", "create", "--tenant", "ci", timeout=180)
        key = run.stdout.strip().splitlines()[-1]
        assert key.startswith("osk_"), run.stdout + run.stderr
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def upload(self, path: Path, what: str = "models", **fields: str) -> str:
        assert self.http is not None
        with open(path, "rb") as f:
            r = self.http.post(f"/v1/{what}", files={"file": (path.name, f)}, data=fields or None)
        assert r.status_code in (200, 201), r.text  # 200: the same bytes uploaded before, the same model
        return r.json()["id"]

    def submit(self, **body) -> str:
        assert self.http is not None
        r = self.http.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        assert self.http is not None
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def wait(
        self, job_id: str, until: tuple[str, ...] = ("succeeded", "failed", "cancelled"), timeout: float = 300
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not {until} within {timeout:.0f} s: {self.job(job_id)}")


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    engine = Engine()
    try:
        engine.start()
    except Unavailable as exc:
        pytest.skip(f"the deployment test needs its own Docker engine: {exc}")
    compose = None
    try:
        engine.clean()
        measured: dict = {}
        try:
            base = _timed(measured, "base_image", lambda: _base_image(engine))
        except Unavailable as exc:
            pytest.skip(f"no base image: {exc}")
        measured["base_image"] = base
        _build(engine, base, measured)
        port = free_port()
        compose = Compose(
            engine, ROOT, f"onnxsmith-ci-{os.getpid()}",
            {"ONNXSMITH_SECRET_KEY": secrets.token_hex(32), "ONNXSMITH_API_PORT": str(port)},
        )  # fmt: skip
        deployment = Deployment(compose, port, measured)
        measured["up_to_ready_s"] = deployment.up()
        deployment.create_key()
        yield deployment
        (CACHE / "measured.json").write_text(json.dumps(measured, indent=1))
        print(f"\ndeployment measured: {json.dumps(measured)}")
    finally:
        if compose is not None:  # the services' logs kept for a look after a failure
            (CACHE / "compose.log").write_text(compose("logs", "--no-color", timeout=120, check=False).stdout)
            compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        engine.clean()
        engine.stop()
        for wheel in (ROOT / "deploy" / "wheels").glob("*.whl"):
            wheel.unlink()


def test_evaluate_and_quantize_run_through_the_published_port(deployment: Deployment, tmp_path: Path) -> None:
    model = onnx_models.mlp(tmp_path / "mlp.onnx")
    x, y = data_files.classification(n=200)
    model_id = deployment.upload(model)
    ds = deployment.upload(data_files.npz(tmp_path / "eval.npz", x=x, y=y), "datasets")
    evaluate = deployment.submit(kind="evaluate", model_id=model_id, datasets={"test": ds})
    quantize = deployment.submit(
        kind="quantize",
        model_id=model_id,
        datasets={"eval": ds},
        params={"mode": "dynamic", "runs": 5, "batch_sizes": [1]},
    )
    for job_id in (evaluate, quantize):
        done = deployment.wait(job_id)
        assert done["status"] == "succeeded", done
    assert deployment.http is not None
    report = deployment.http.get(f"/v1/jobs/{evaluate}/report").json()
    assert report["sample_count"] == 200
    quant = deployment.http.get(f"/v1/jobs/{quantize}/report").json()
    content = deployment.http.get(f"/v1/models/{quant['output_model_id']}/content")  # from the S3 stand-in
    assert content.status_code == 200 and len(content.content) == quant["output_model"]["size_bytes"]
    session = ort.InferenceSession(content.content)
    assert session.run(None, {"x": x[:4].astype(np.float32)})[0].shape == (4, 10)


def _distill_inputs(deployment: Deployment, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A distillation that runs for some seconds on one core: the student trained on 2,000 samples."""
    model = onnx_models.mlp(tmp_path / "teacher.onnx", n_in=64, hidden=512, n_out=10)
    x = np.random.default_rng(0).standard_normal((2400, 64)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    model_id = deployment.upload(model)
    train = deployment.upload(data_files.npz(tmp_path / "train.npz", x=x[:2000], y=y[:2000]), "datasets")
    val = deployment.upload(data_files.npz(tmp_path / "val.npz", x=x[2000:], y=y[2000:]), "datasets")
    return model_id, {"train": train, "validation": val}


DISTILL = {"student": {"auto": {"ratio": 0.5}}, "epochs": 40, "runs": 5, "batch_sizes": [1]}


def test_distill_runs_on_the_image_with_pytorch(deployment: Deployment) -> None:
    assert deployment.http is not None
    kinds = {k["name"]: k for k in deployment.http.get("/v1/kinds").json()}
    assert kinds["distill"]["runnable"] == "all", kinds["distill"]
    assert kinds["quantize"]["runnable"] == "all", kinds["quantize"]


def test_a_worker_restarted_mid_job_finishes_it_once(deployment: Deployment, tmp_path: Path) -> None:
    model_id, datasets = _distill_inputs(deployment, tmp_path)
    # longer than the 10 s a stopping container is given: Celery's warm shutdown cannot finish it, the worker is
    # killed, and the job's lease (30 s) runs out before the restarted worker's reconciler sends it again
    params = DISTILL | {"epochs": 300, "patience": None}  # no early stop: about 30 s on one core
    job_id = deployment.submit(kind="distill", model_id=model_id, datasets=datasets, params=params)
    deployment.wait(job_id, until=("running", "succeeded", "failed"), timeout=120)
    assert deployment.job(job_id)["status"] == "running"
    deployment.compose("restart", "worker", timeout=180)
    done = deployment.wait(job_id, timeout=600)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert deployment.http is not None
    models = [
        m
        for m in deployment.http.get("/v1/models", params={"limit": 200}).json()["items"]
        if m["source_job_id"] == job_id
    ]
    artifacts = deployment.http.get(f"/v1/jobs/{job_id}/artifacts").json()
    assert len(models) == 1 and len([a for a in artifacts if a["role"] == "model"]) == 1, (models, artifacts)
    deployment.measured["restart_attempts"] = done["attempts"]


def test_two_workers_run_two_jobs_at_once(deployment: Deployment, tmp_path: Path) -> None:
    deployment.compose("up", "-d", "--no-recreate", "--scale", "worker=2", "worker", timeout=300)
    containers = deployment.compose.containers("worker")
    assert len(containers) == 2
    model_id, datasets = _distill_inputs(deployment, tmp_path)
    # each worker runs two at a time and holds at most two messages: with three jobs, both workers get one
    jobs = [deployment.submit(kind="distill", model_id=model_id, datasets=datasets, params=DISTILL) for _ in range(3)]
    done = [deployment.wait(j, timeout=600) for j in jobs]
    logs = {c: deployment.compose.engine.docker("logs", c).stderr for c in containers}
    assert all(d["status"] == "succeeded" for d in done), ([(d["id"], d["status"], d["error"]) for d in done], logs)
    ran_on = {j: c for c, log in logs.items() for j in jobs if f"job {j} (distill): attempt" in log}
    assert set(ran_on) == set(jobs) and len(set(ran_on.values())) == 2, ran_on
    spans = {d["id"]: (d["started_at"], d["finished_at"]) for d in done}
    overlapping = [
        (a, b) for a in jobs for b in jobs
        if ran_on[a] != ran_on[b] and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]  # fmt: skip
    assert overlapping, spans


def test_down_and_up_keep_the_data_in_the_volumes(deployment: Deployment) -> None:
    assert deployment.http is not None
    before = deployment.http.get("/v1/models", params={"limit": 200}).json()["items"]
    jobs = deployment.http.get("/v1/jobs", params={"limit": 200}).json()["items"]
    deployment.compose("down", timeout=300)
    deployment.measured["up_again_to_ready_s"] = deployment.up()
    after = deployment.http.get("/v1/models", params={"limit": 200}).json()["items"]  # the same key: PostgreSQL kept it
    assert [m["id"] for m in after] == [m["id"] for m in before]
    for m in before:  # every blob back from the S3 stand-in's volume, verified against its digest
        content = deployment.http.get(f"/v1/models/{m['id']}/content")
        assert content.status_code == 200 and len(content.content) == m["size_bytes"], m
    assert [j["status"] for j in deployment.http.get("/v1/jobs", params={"limit": 200}).json()["items"]] == [
        j["status"] for j in jobs
    ]
