"""Uploads stream: a body over the limit is refused without reading the rest of it."""

from __future__ import annotations

import json
import threading
import time

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
    settings.max_model_bytes = settings.max_bundle_bytes = 1 << 20
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


def test_a_single_file_stops_at_its_own_limit_below_the_archive_limit(client, auth, db, settings) -> None:
    """The body may be as large as an archive (max_bundle_bytes), but a file that does not start like one is held
    to max_model_bytes as it streams: the server stops reading at that limit, not at the archive's."""
    settings.max_model_bytes, settings.max_bundle_bytes = 1 << 20, 1 << 30
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    status, pulled, body = call_asgi(client.app, headers, total=50 << 20)
    assert status == 413 and body["limit_bytes"] == 1 << 20
    assert pulled < (1 << 20) + 2 * (64 << 10), f"read {pulled} bytes of a body over a 1 MiB limit"
    assert count_rows(db, "models") == 0 and list(settings.tmp_dir.glob("*")) == []


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


def test_an_unreachable_object_store_answers_503_stores_nothing_and_recovers(db_url, tmp_path, db) -> None:
    """The store down (here: an S3 endpoint nobody listens on) was the generic 500 internal-error. Once an S3
    server answers on that endpoint, the next upload succeeds: nothing in the API has to be restarted."""
    import boto3
    from fastapi.testclient import TestClient
    from moto.server import ThreadedMotoServer

    from service.app import create_app
    from service.settings import Settings
    from tests import onnx_models
    from tests.conftest import count_rows, create_key, free_port

    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        storage_url="s3://onnxsmith-down/p",
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    auth = {"Authorization": f"Bearer {create_key(settings, 'acme')}"}
    model = onnx_models.mlp(tmp_path / "m.onnx")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        with open(model, "rb") as f:
            r = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert r.json()["type"].endswith("/store-unavailable") and "127.0.0.1" not in r.text
        assert count_rows(db, "models") == 0 and count_rows(db, "blobs") == 0  # nothing half-stored
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket="onnxsmith-down")
            with open(model, "rb") as f:
                r = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)})
            assert r.status_code == 201, r.text
            assert client.get(f"/v1/models/{r.json()['id']}/content", headers=auth).content == model.read_bytes()
        finally:
            server.stop()


# --- slow, stalled and too many uploads (issue 15, item 10) ---------------------------------------------------


def _scope(headers: dict[str, str]) -> dict:
    return {
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


async def _upload(app, auth: dict[str, str], body_after_head) -> tuple[int, dict, float]:
    """Send the multipart head, then whatever `body_after_head()` (an async generator) yields; (status, body,
    seconds to the answer)."""
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    chunks = body_after_head()
    first = True
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": _head(), "more_body": True}
        try:
            return {"type": "http.request", "body": await anext(chunks), "more_body": True}
        except StopAsyncIteration:
            return {"type": "http.request", "body": f"\r\n--{BOUNDARY}--\r\n".encode(), "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    start = time.monotonic()
    with anyio.fail_after(30):  # every wait has a deadline
        await app(_scope(headers), receive, send)
    status = next(m for m in messages if m["type"] == "http.response.start")["status"]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, json.loads(body), time.monotonic() - start


async def _stall():
    await anyio.sleep_forever()
    yield b""


@pytest.fixture
def paced(settings):
    settings.upload_idle_timeout_s = 0.5
    settings.upload_min_bytes_per_s = 1000
    return settings


def test_a_stalled_body_is_cut_with_408_and_its_temp_file_removed(client, auth, paced, db, settings) -> None:
    status, body, seconds = anyio.run(_upload, client.app, auth, _stall)
    assert status == 408 and body["type"].endswith("/upload-timeout"), body
    assert "sent nothing for 0.5 s" in body["detail"]
    assert 0.4 < seconds < 10
    assert list(settings.tmp_dir.glob("*")) == [] and count_rows(db, "models") == 0


def test_a_dripped_body_is_cut_once_under_the_minimum_rate(client, auth, paced, settings) -> None:
    async def drip():
        for _ in range(1000):  # 10 bytes every 0.05 s: 200 bytes/s, never idle for 0.5 s
            await anyio.sleep(0.05)
            yield b"\0" * 10

    status, body, seconds = anyio.run(_upload, client.app, auth, drip)
    assert status == 408 and "under the minimum of 1000 bytes/s" in body["detail"], body
    assert seconds < 10, "a dripped body held the upload past its minimum rate"
    assert list(settings.tmp_dir.glob("*")) == []


def test_uploads_in_flight_per_tenant_are_bounded_and_other_tenants_are_not(
    client, auth, other_auth, paced, settings
) -> None:
    settings.max_uploads_per_tenant = 2
    settings.upload_idle_timeout_s = 2.0

    async def scenario() -> list[tuple[str, int, dict]]:
        results: list[tuple[str, int, dict]] = []

        async def one(who: str, headers: dict[str, str], delay: float) -> None:
            await anyio.sleep(delay)
            status, body, _ = await _upload(client.app, headers, _stall)
            results.append((who, status, body))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "acme-1", auth, 0)
            tg.start_soon(one, "acme-2", auth, 0)
            tg.start_soon(one, "acme-3", auth, 0.3)  # while the two hold the tenant's slots
            tg.start_soon(one, "globex", other_auth, 0.3)
        return results

    results = {who: (status, body) for who, status, body in anyio.run(scenario)}
    status, body = results["acme-3"]
    assert status == 429 and body["type"].endswith("/too-many-uploads"), body
    assert "2 uploads in flight" in body["detail"]
    assert results["acme-1"][0] == results["acme-2"][0] == 408
    assert results["globex"][0] == 408, "another tenant's upload was refused"
    # the slots are given back: the next upload of the tenant is read and checked
    settings.upload_idle_timeout_s = 30
    r = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", b"not a model")})
    assert r.status_code == 422, r.text


def test_checks_wait_their_turn_and_answer_503_past_the_deadline() -> None:
    from service.errors import AppError
    from service.uploads import CheckTurns

    async def scenario() -> None:
        turns = CheckTurns()
        held = await turns.wait_turn(1, 1.0)
        with pytest.raises(AppError) as err:
            await turns.wait_turn(1, 0.2)
        assert err.value.status == 503 and err.value.type == "checks-busy"
        held.release()
        (await turns.wait_turn(1, 0.2)).release()  # free again

    anyio.run(scenario)


def test_parallel_uploads_run_at_most_max_concurrent_checks_children(
    client, auth, settings, tmp_path, monkeypatch
) -> None:
    """Six uploads at once with one check allowed: every upload succeeds, one checking child at a time."""
    from service import sandboxing
    from tests import onnx_models

    settings.max_concurrent_checks = 1
    running = peak = 0
    real, lock = sandboxing.run_isolated, threading.Lock()

    def counting(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(sandboxing, "run_isolated", counting)
    models = [onnx_models.mlp(tmp_path / f"m{i}.onnx", hidden=8 + i).read_bytes() for i in range(6)]

    async def scenario() -> list[int]:
        statuses: list[int] = []

        async def one(data: bytes) -> None:
            async def rest():
                yield data

            status, body, _ = await _upload(client.app, auth, rest)
            statuses.append(status)

        async with anyio.create_task_group() as tg:
            for data in models:
                tg.start_soon(one, data)
        return statuses

    settings.max_uploads_per_tenant = 8
    assert sorted(anyio.run(scenario)) == [201] * 6
    assert peak == 1, f"{peak} checking children ran at once with max_concurrent_checks=1"
