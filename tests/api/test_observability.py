from __future__ import annotations

import re

from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests import onnx_models
from tests.conftest import OPERATOR_KEY


def test_readyz_ok(client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "store": "ok"}}


def test_readyz_names_what_is_down(db_url, tmp_path, s3_endpoint) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=db_url,
        broker_url="redis://127.0.0.1:1/0",
        storage_url="s3://no-such-bucket-xyz/p",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    with TestClient(create_app(settings.model_copy(update={"operator_key": SecretStr(OPERATOR_KEY)}))) as client:
        r = client.get("/readyz", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        anyone = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["detail"] == "not ready: broker, store unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] not in ("ok", "unavailable") and body["checks"]["store"] != "ok"  # the causes
    # anyone else (a load balancer) learns what is down, not the internal addresses and errors
    assert anyone.status_code == 503 and anyone.json()["detail"] == body["detail"]
    assert anyone.json()["checks"] == {"database": "ok", "broker": "unavailable", "store": "unavailable"}
    assert "127.0.0.1" not in anyone.text and "no-such-bucket" not in anyone.text


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_requests_jobs_and_queue(client, auth, tmp_path) -> None:
    with open(onnx_models.mlp(tmp_path / "m.onnx"), "rb") as f:
        model = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)}).json()
    for _ in range(3):
        client.get(f"/v1/models/{model['id']}", headers=auth)
    client.get("/v1/models/mdl_01m8n0k5rywv9byptk738d4r00", headers=auth)
    client.post("/v1/jobs", headers=auth, json={"kind": "benchmark", "model_id": model["id"]})
    refused = client.get("/metrics")  # every tenant's job counts: not for anyone with a tenant key
    assert refused.status_code == 403 and refused.json()["type"].endswith("/forbidden")
    assert client.get("/metrics", headers=auth).status_code == 403
    text = client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}).text
    assert (
        _sample(text, "onnxsmith_http_requests_total", method="GET", route="/v1/models/{model_id}", status="200") == 3
    )
    assert (
        _sample(text, "onnxsmith_http_requests_total", method="GET", route="/v1/models/{model_id}", status="404") == 1
    )
    assert _sample(text, "onnxsmith_http_request_duration_seconds_count", method="POST", route="/v1/models") == 1
    assert _sample(text, "onnxsmith_jobs", kind="benchmark", status="queued") == 1
    assert _sample(text, "onnxsmith_jobs", kind="benchmark", status="running") == 0
    assert _sample(text, "onnxsmith_queue_depth", queue="measure") == 1  # nobody consumes in this test
