"""End-to-end fixtures: the API (TestClient) + Redis + real Celery worker processes + PostgreSQL + a store.

Each test module gets its own Redis database number, data folder and workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import create_key, free_port

REDIS = os.environ.get("ONNXSMITH_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.log, self.name = log, name
        self._out = open(log, "ab")  # noqa: SIM115 - the worker writes to it until stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onnxsmith.cli", "worker", "--concurrency", "1", "--hostname", f"{name}@%h"],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_for("ready", timeout=60)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, words: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if words in self.text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"worker log never said {words!r}:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool) as a crash or OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def redis_db(request: pytest.FixtureRequest) -> Iterator[int]:
    number = getattr(request.module, "REDIS_DB", 11)
    client = redis.Redis.from_url(f"{REDIS}/{number}")
    client.flushdb()
    yield number
    client.flushdb()


def topology_env(*, data: Path, database_url: str, broker_url: str, visibility_timeout_s: int = 120) -> dict[str, str]:
    """The environment of the test's workers: short leases and reconcile intervals so faults resolve in seconds."""
    env = dict(os.environ)
    env.update(
        ONNXSMITH_DATA_DIR=str(data),
        ONNXSMITH_DATABASE_URL=database_url,
        ONNXSMITH_STORAGE_URL=(data / "store").as_uri(),
        ONNXSMITH_BROKER_URL=broker_url,
        ONNXSMITH_JOB_LEASE_S="2",
        ONNXSMITH_JOB_TIME_LIMIT_S="60",
        ONNXSMITH_VISIBILITY_TIMEOUT_S=str(visibility_timeout_s),
        ONNXSMITH_JOB_MAX_ATTEMPTS="3",
        ONNXSMITH_RECONCILE_INTERVAL_S="1",
        ONNXSMITH_REQUEUE_AFTER_S="3",
    )
    return env


def settings_for(env: dict[str, str]) -> Settings:
    """The API's settings matching the workers' environment."""
    return Settings(
        data_dir=Path(env["ONNXSMITH_DATA_DIR"]),
        database_url=env["ONNXSMITH_DATABASE_URL"],
        storage_url=env["ONNXSMITH_STORAGE_URL"],
        broker_url=env["ONNXSMITH_BROKER_URL"],
        job_lease_s=float(env["ONNXSMITH_JOB_LEASE_S"]),
        job_time_limit_s=float(env["ONNXSMITH_JOB_TIME_LIMIT_S"]),
    )


@contextlib.contextmanager
def worker_starter(env: dict[str, str], logs: Path) -> Iterator[Callable[..., Worker]]:
    """`start(**env overrides)` starts a worker process; all of them are stopped at the end."""
    workers: list[Worker] = []

    def start(**overrides: str) -> Worker:
        w = Worker(dict(env, **overrides), logs / f"w{len(workers)}.log", f"w{len(workers)}-{os.getpid()}")
        workers.append(w)
        return w

    try:
        yield start
    finally:
        for w in workers:
            w.stop()


@contextlib.contextmanager
def api_client(settings: Settings, tenant: str = "acme") -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {create_key(settings, tenant)}"
        yield c


@pytest.fixture(scope="module")
def e2e_env(pg_url: str, redis_db: int, tmp_path_factory: pytest.TempPathFactory, request) -> dict[str, str]:
    return topology_env(
        data=tmp_path_factory.mktemp("e2e-data"),
        database_url=pg_url,
        broker_url=f"{REDIS}/{redis_db}",
        visibility_timeout_s=getattr(request.module, "VISIBILITY_TIMEOUT_S", 120),
    )


@pytest.fixture(scope="module")
def start_worker(e2e_env: dict[str, str], tmp_path_factory) -> Iterator[Callable[..., Worker]]:
    with worker_starter(e2e_env, tmp_path_factory.mktemp("worker-logs")) as start:
        yield start


@pytest.fixture
def e2e_settings(e2e_env: dict[str, str], db_url: str) -> Settings:
    assert db_url == e2e_env["ONNXSMITH_DATABASE_URL"]
    return settings_for(e2e_env)


@pytest.fixture
def api(e2e_settings: Settings) -> Iterator[TestClient]:
    with api_client(e2e_settings) as c:
        yield c


def wait_job(api: TestClient, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']} ({job['stage']}) after {timeout} s")


@pytest.fixture(scope="module")
def server_worker(start_worker) -> Worker:
    return start_worker()


@pytest.fixture
def server(e2e_settings, server_worker) -> Iterator[tuple[str, str]]:
    """(base url, API key) of a live API (uvicorn on a free port); a worker consumes its jobs."""
    port = free_port()
    config = uvicorn.Config(create_app(e2e_settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", create_key(e2e_settings, "sdk")
    srv.should_exit = True
    thread.join(10)
