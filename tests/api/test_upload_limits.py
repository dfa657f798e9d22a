"""Uploads stream: a body over the limit is refused without reading the rest of it."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.conftest import count_rows, stored_files

BOUNDARY = "testboundary"


def _head(filename: str = "m.onnx") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def call_asgi(app, headers: dict[str, str], total: int, chunk: int = 64 << 10) -> tuple[int, int, dict]:
    """Send a multipart upload of `total` file bytes straight to the ASGI app, chunk by chunk, and count
    how many body bytes the app pulled before it answered. Returns (status, bytes pulled, json body)."""
    pulled = 0
    head, tail = _head(), f"\r\n--{BOUNDARY}--\r\n".encode()
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled == 0:
            pulled = len(head)
            return {"type": "http.request", "body": head, "more_body": True}
        if pulled - len(head) >= total:
            return {"type": "http.request", "body": tail, "more_body": False}
        pulled += chunk
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": True}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], pulled, json.loads(body)


@pytest.fixture
def small_limit(settings):
    settings.max_model_bytes = 1 << 20
    return settings.max_model_bytes


def test_declared_length_over_the_limit_is_413_before_reading(client, auth, small_limit) -> None:
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(50 << 20)}
    status, pulled, body = call_asgi(client.app, headers, total=50 << 20)
    assert status == 413
    assert body["limit_bytes"] == small_limit and body["type"].endswith("/upload-too-large")
    assert pulled == 0, "the server read the body although its declared length was over the limit"


def test_streamed_body_over_the_limit_stops_at_the_limit(client, auth, small_limit, db, settings) -> None:
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}  # no length: chunked
    status, pulled, _ = call_asgi(client.app, headers, total=50 << 20)
    assert status == 413
    assert pulled < small_limit + 2 * (64 << 10), f"read {pulled} bytes of a body over a {small_limit} limit"
    assert count_rows(db, "models") == 0 and stored_files(settings) == []
    assert list(settings.tmp_dir.glob("*")) == []


def test_body_under_the_limit_is_read_whole(client, auth, small_limit) -> None:
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    status, pulled, body = call_asgi(client.app, headers, total=small_limit // 2)
    assert status == 422 and body["type"].endswith("/invalid-model")  # zeros are not a model, but all were read
    assert pulled >= small_limit // 2


def test_truncated_multipart_body_is_refused(client, auth, db, settings) -> None:
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = client.post("/v1/models", headers=headers, content=_head() + b"\x08\x07" * 100)
    assert r.status_code == 422
    assert "ended early" in r.json()["detail"]
    assert list(settings.tmp_dir.glob("*")) == []


@pytest.mark.parametrize("filename", [b"nul\x00.onnx", b"..%2F..%2Fx.onnx", b"../x.onnx"])
def test_raw_path_like_filename_is_refused(client, auth, db, settings, filename) -> None:
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + b'"\r\n\r\nabc\r\n'
        + f"--{BOUNDARY}--\r\n".encode()
    )
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    r = client.post("/v1/models", headers=headers, content=body)
    assert r.status_code == 422, r.text
    assert "filename" in r.json()["detail"]
    assert count_rows(db, "models") == 0


def test_an_unreachable_object_store_answers_503_and_stores_nothing(db_url, tmp_path, db) -> None:
    """The store down (here: an S3 endpoint nobody listens on) was the generic 500 internal-error."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests import onnx_models
    from tests.conftest import count_rows, create_key, free_port

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        storage_url="s3://onnxsmith-down/p",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    auth = {"Authorization": f"Bearer {create_key(settings, 'acme')}"}
    model = onnx_models.mlp(tmp_path / "m.onnx")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client, open(model, "rb") as f:
        r = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)})
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
    assert r.json()["type"].endswith("/store-unavailable") and "127.0.0.1" not in r.text
    assert count_rows(db, "models") == 0 and count_rows(db, "blobs") == 0  # nothing half-stored
