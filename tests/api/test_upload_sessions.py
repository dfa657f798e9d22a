"""Resumable uploads (POST /v1/uploads): parts in any order, re-sendable, checked and stored on `complete` exactly
as a one-request upload; incomplete, wrong-length, foreign and hostile sessions are refused with nothing kept."""

from __future__ import annotations

import hashlib

import pytest

from tests import bundles, onnx_models
from tests.api.test_models import PROBLEM, assert_nothing_stored
from tests.conftest import count_rows


@pytest.fixture
def small_parts(settings):
    settings.upload_part_bytes = 1 << 16
    return settings.upload_part_bytes


def _start(client, auth, data: bytes, **fields) -> dict:
    r = client.post("/v1/uploads", headers=auth, json={"size": len(data), **fields})
    assert r.status_code == 201, r.text
    return r.json()


def _put(client, auth, upload_id: str, n: int, data: bytes):
    return client.put(f"/v1/uploads/{upload_id}/parts/{n}", headers=auth, content=data)


def _part(data: bytes, n: int, size: int) -> bytes:
    return data[n * size : (n + 1) * size]


@pytest.mark.sqlite
def test_parts_in_any_order_then_complete(client, auth, tmp_path, db, settings, small_parts) -> None:
    folder = bundles.with_external_data(tmp_path / "m", onnx_models.mlp_model(n_in=64, hidden=1024))
    data = bundles.tar_of(tmp_path / "m.tar", bundles.files_of(folder)).read_bytes()
    up = _start(client, auth, data, filename="m.tar", name="resumed")
    assert up["parts"] == -(-len(data) // small_parts) >= 2 and up["received"] == []
    for n in reversed(range(up["parts"])):
        assert _put(client, auth, up["id"], n, _part(data, n, small_parts)).status_code == 200
    assert client.get(f"/v1/uploads/{up['id']}", headers=auth).json()["received"] == list(range(up["parts"]))
    r = client.post(f"/v1/uploads/{up['id']}/complete", headers=auth)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["name"] == "resumed" and model["bundle_format"] == "tar" and len(model["parts"]) == 2
    assert client.get(f"/v1/uploads/{up['id']}", headers=auth).status_code == 404  # the session is gone
    assert not (settings.tmp_dir / "sessions").exists()
    # the same file again, in one request: the same model
    with open(tmp_path / "m.tar", "rb") as f:
        again = client.post("/v1/models", headers=auth, files={"file": ("m.tar", f)})
    assert again.status_code == 200 and again.json()["id"] == model["id"]


def test_missing_and_wrong_length_parts_are_named_and_resendable(client, auth, tmp_path, small_parts) -> None:
    path = onnx_models.big_mlp(tmp_path / "big.onnx", megabytes=1)
    data = path.read_bytes()
    up = _start(client, auth, data, filename="big.onnx")
    assert _put(client, auth, up["id"], 0, _part(data, 0, small_parts)).status_code == 200
    short = _put(client, auth, up["id"], 1, _part(data, 1, small_parts)[:100])
    assert short.status_code == 422 and "has 100 bytes, expected 65536" in short.json()["detail"]
    assert _put(client, auth, up["id"], up["parts"], b"x").status_code == 422  # no such part
    r = client.post(f"/v1/uploads/{up['id']}/complete", headers=auth)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert r.json()["detail"].startswith("parts not received yet: 1, 2")
    for n in range(1, up["parts"]):
        assert _put(client, auth, up["id"], n, _part(data, n, small_parts)).status_code == 200
    r = client.post(f"/v1/uploads/{up['id']}/complete", headers=auth)
    assert r.status_code == 201 and r.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_an_invalid_file_is_refused_on_complete_with_nothing_kept(client, auth, db, settings, small_parts) -> None:
    data = b"not a model at all" * 10_000
    up = _start(client, auth, data)
    for n in range(up["parts"]):
        _put(client, auth, up["id"], n, _part(data, n, small_parts))
    r = client.post(f"/v1/uploads/{up['id']}/complete", headers=auth)
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-model")
    assert_nothing_stored(db, settings)


def test_sessions_are_per_tenant_bounded_and_expire(client, auth, other_auth, settings, small_parts) -> None:
    up = _start(client, auth, b"x" * 10)
    assert client.get(f"/v1/uploads/{up['id']}", headers=other_auth).status_code == 404
    assert _put(client, other_auth, up["id"], 0, b"x" * 10).status_code == 404
    assert client.get("/v1/uploads/upl_../etc", headers=auth).status_code == 404
    settings.max_model_bytes = settings.max_bundle_bytes = 1000
    r = client.post("/v1/uploads", headers=auth, json={"size": 1001})
    assert r.status_code == 413 and r.json()["limit_bytes"] == 1000
    assert client.post("/v1/uploads", headers=auth, json={"size": 0}).status_code == 422
    assert client.delete(f"/v1/uploads/{up['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/uploads/{up['id']}", headers=auth).status_code == 404
    settings.max_uploads_per_tenant = 2
    old = _start(client, auth, b"x" * 10)
    _start(client, auth, b"x" * 10)
    r = client.post("/v1/uploads", headers=auth, json={"size": 10})
    assert r.status_code == 429 and "resumable uploads open" in r.json()["detail"]
    assert client.post("/v1/uploads", headers=other_auth, json={"size": 10}).status_code == 201  # per key
    settings.upload_session_ttl_s = 0
    _start(client, auth, b"y" * 10)  # starting one sweeps the expired ones
    assert client.get(f"/v1/uploads/{old['id']}", headers=auth).status_code == 404


def test_counting_rows_never_sees_a_session(client, auth, db, small_parts) -> None:
    _start(client, auth, b"x" * 10)
    assert count_rows(db, "models") == 0 and count_rows(db, "blobs") == 0
