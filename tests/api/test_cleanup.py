"""`onnxsmith cleanup`: unreferenced objects older than the grace period go; everything else stays."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from service.db import make_engine, make_session_factory
from service.storage import blob_key, open_store
from service.storage.cleanup import cleanup
from tests import onnx_models
from tests.conftest import count_rows


def _orphan(store, tmp_path, data: bytes, age_s: float) -> str:
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    key = blob_key(sha)
    store.put_file(key, path, sha256=sha, size=len(data))
    stored = store.root / key
    os.utime(stored, (time.time() - age_s, time.time() - age_s))
    return key


@pytest.mark.sqlite
def test_cleanup_removes_only_old_unreferenced_objects(client, auth, settings, tmp_path, db) -> None:
    store = open_store(settings)
    with open(onnx_models.mlp(tmp_path / "m.onnx"), "rb") as f:
        model = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)}).json()
    referenced = blob_key(model["sha256"])
    os.utime(store.root / referenced, (time.time() - 7200, time.time() - 7200))
    old = _orphan(store, tmp_path, b"left behind by a crashed upload", age_s=7200)
    fresh = _orphan(store, tmp_path, b"an upload still in progress", age_s=10)
    sessions = make_session_factory(make_engine(settings.resolved_database_url))

    dry = cleanup(sessions=sessions, store=store, grace_s=3600, dry_run=True)
    assert dry.removed == [old] and store.exists(old)

    report = cleanup(sessions=sessions, store=store, grace_s=3600, dry_run=False)
    assert report.removed == [old] and report.kept_recent == 1 and report.objects_seen == 3
    assert not store.exists(old) and store.exists(fresh) and store.exists(referenced)
    assert count_rows(db, "blobs") == 1  # the model's; no tombstone left for the removed one
    assert client.get(f"/v1/models/{model['id']}/content", headers=auth).status_code == 200


def test_upload_after_cleanup_of_the_same_bytes_stores_them_again(client, auth, settings, tmp_path) -> None:
    store = open_store(settings)
    path = onnx_models.mlp(tmp_path / "m.onnx")
    key = _orphan(store, tmp_path, path.read_bytes(), age_s=7200)
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    assert cleanup(sessions=sessions, store=store, grace_s=3600, dry_run=False).removed == [key]
    with open(path, "rb") as f:
        model = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", f)}).json()
    assert client.get(f"/v1/models/{model['id']}/content", headers=auth).content == path.read_bytes()
