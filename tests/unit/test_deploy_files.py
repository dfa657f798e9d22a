"""The compose files and the Dockerfile read as files (fast, everywhere); tests/deploy/test_compose.py builds and runs
them where a Docker engine can start."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services() -> None:
    services = _compose()["services"]
    assert set(services) == {"migrate", "api", "worker", "worker-measure", "postgres", "redis", "minio", "minio-init"}
    for name in ("api", "postgres", "redis", "minio"):
        assert "healthcheck" in services[name], name
    assert "noeviction" in services["redis"]["command"]
    measure = services["worker-measure"]["command"]
    assert measure[measure.index("--queues") + 1] == "measure" and measure[measure.index("--concurrency") + 1] == "1"
    general = services["worker"]["command"]
    assert "measure" not in general[general.index("--queues") + 1].split(",")
    for name in ("api", "worker", "worker-measure"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert set(_compose()["volumes"]) >= {"pgdata", "redisdata", "miniodata"}


def test_compose_environment_names_real_settings() -> None:
    env = _compose()["services"]["api"]["environment"]
    fields = {f"ONNXSMITH_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    assert env["ONNXSMITH_BROKER_URL"].startswith("redis://")
    assert env["ONNXSMITH_STORAGE_URL"].startswith("s3://")
    bucket = env["ONNXSMITH_STORAGE_URL"].split("/")[2]
    assert f"store/{bucket}" in _compose()["services"]["minio-init"]["entrypoint"][-1]


def test_dockerfile_runs_as_a_non_root_user_from_a_slim_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]  # build stage, then the image
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    for folder in ("engine", "service", "workers", "onnxsmith", "alembic"):
        assert f"COPY {folder} ./{folder}" in text
    assert "ARG WITH_TRAIN=true" in text  # workers can distill
    assert re.search(r"--index-url \S+ torch==2\.13\.0", text)  # the CPU build, never PyPI's CUDA wheel
    assert _compose()["x-onnxsmith"]["build"]["args"]["WITH_TRAIN"] == "${WITH_TRAIN:-true}"


def test_the_filesystem_broker_keeps_its_control_files_in_the_data_folder(tmp_path) -> None:
    from service.broker import make_celery
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", broker_url="filesystem://")
    options = make_celery(settings).conf.broker_transport_options
    assert Path(options["control_folder"]).is_relative_to(tmp_path / "data")
    assert not (Path(__file__).resolve().parents[2] / "control").exists(), "exchange files in the repository"


def test_compose_files_stay_valid_for_docker_compose_1_29() -> None:
    """Debian's docker-compose 1.29 refuses a top-level `name`; the CI override only swaps images and entrypoints."""
    assert "name" not in _compose()
    override = yaml.safe_load((ROOT / "docker-compose.ci.yml").read_text())
    assert set(override["services"]) <= set(_compose()["services"])
    for service in override["services"].values():
        assert set(service) <= {"image", "entrypoint", "command", "healthcheck", "stop_grace_period"}, service
