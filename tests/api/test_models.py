"""Model uploads through the API on a real database and store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests import onnx_models
from tests.conftest import count_rows, s3_client, s3_settings, stored_files

PROBLEM = "application/problem+json"


def upload(client: TestClient, auth: dict, path: Path, name: str | None = None, filename: str | None = None):
    data = {"name": name} if name is not None else None
    with open(path, "rb") as f:
        return client.post("/v1/models", headers=auth, files={"file": (filename or path.name, f)}, data=data)


def assert_nothing_stored(db, settings) -> None:
    assert count_rows(db, "models") == 0
    assert count_rows(db, "blobs") == 0
    assert stored_files(settings) == []
    leftovers = list(settings.tmp_dir.glob("*")) if settings.tmp_dir.exists() else []
    assert leftovers == []


@pytest.mark.sqlite
def test_upload_inspect_download_delete(client, auth, tmp_path, db, settings) -> None:
    path = onnx_models.mlp(tmp_path / "digits-mlp.onnx")
    r = upload(client, auth, path)
    assert r.status_code == 201, r.text
    model = r.json()
    assert r.headers["location"] == f"/v1/models/{model['id']}"
    assert model["name"] == "digits-mlp"
    assert model["filename"] == "digits-mlp.onnx"
    assert model["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model["size_bytes"] == path.stat().st_size
    assert model["info"]["macs_per_sample"] == 64 * 32 + 32 * 10
    assert model["info"]["inputs"][0]["shape"] == ["batch", 64]

    assert client.get(f"/v1/models/{model['id']}", headers=auth).json() == model
    content = client.get(f"/v1/models/{model['id']}/content", headers=auth)
    assert content.status_code == 200
    assert content.content == path.read_bytes()
    assert content.headers["etag"] == f'"{model["sha256"]}"'

    assert client.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/models/{model['id']}", headers=auth).status_code == 404
    assert count_rows(db, "blobs") == 0
    assert stored_files(settings) == []


@pytest.mark.sqlite
def test_same_bytes_again_return_the_existing_model(client, auth, tmp_path) -> None:
    path = onnx_models.mlp(tmp_path / "m.onnx")
    first = upload(client, auth, path, name="first")
    again = upload(client, auth, path, name="second")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["name"] == "first"


def test_blob_shared_between_tenants_is_removed_with_its_last_reference(
    client, auth, other_auth, tmp_path, db, settings
) -> None:
    path = onnx_models.mlp(tmp_path / "m.onnx")
    mine = upload(client, auth, path).json()
    theirs = upload(client, other_auth, path)
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"]
    assert count_rows(db, "blobs") == 1 and len(stored_files(settings)) == 1

    assert client.delete(f"/v1/models/{mine['id']}", headers=auth).status_code == 204
    assert len(stored_files(settings)) == 1, "the other tenant's model still needs the blob"
    assert client.get(f"/v1/models/{theirs.json()['id']}/content", headers=other_auth).content == path.read_bytes()

    assert client.delete(f"/v1/models/{theirs.json()['id']}", headers=other_auth).status_code == 204
    assert count_rows(db, "blobs") == 0 and stored_files(settings) == []


def test_another_tenants_model_is_a_404(client, auth, other_auth, tmp_path) -> None:
    model = upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx")).json()
    for method, url in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        r = client.request(method, f"/v1/models/{model['id']}{url}", headers=other_auth)
        assert r.status_code == 404, (method, url)
        assert r.headers["content-type"] == PROBLEM
    assert client.get("/v1/models", headers=other_auth).json()["items"] == []
    assert client.get(f"/v1/models/{model['id']}", headers=auth).status_code == 200


def test_pagination_walks_every_model_newest_first(client, auth, tmp_path) -> None:
    ids = []
    for seed in range(5):
        ids.append(upload(client, auth, onnx_models.mlp(tmp_path / f"m{seed}.onnx", seed=seed)).json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/models", headers=auth, params=params).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    r = client.get("/v1/models", headers=auth, params={"limit": 0})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"
    assert client.get("/v1/models", headers=auth, params={"cursor": "'; drop"}).status_code == 422


BAD_FILES = {
    "empty": (lambda p: _write(p, b""), "invalid-model", "empty"),
    "random-bytes": (lambda p: _write(p, bytes(range(256)) * 40), "invalid-model", "not an ONNX model"),
    "truncated": (lambda p: _write(p, onnx_models.mlp_model().SerializeToString()[:5000]), "invalid-model", ""),
    "checker": (onnx_models.fails_checker, "invalid-model", "ONNX checker"),
    "runtime": (onnx_models.fails_runtime, "invalid-model", "ONNX Runtime"),
    "external-data": (lambda p: onnx_models.external_data(p, "weights.bin"), "external-data-not-supported", ""),
    "external-traversal": (
        lambda p: onnx_models.external_data(p, "../../../etc/passwd"),
        "external-data-not-supported",
        "../",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.sqlite
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_invalid_files_are_422_and_leave_nothing(client, auth, tmp_path, db, settings, case) -> None:
    make, type_, words = BAD_FILES[case]
    r = upload(client, auth, make(tmp_path / "bad.onnx"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"].endswith("/" + type_)
    assert words in body["detail"]
    assert str(settings.resolved_data_dir) not in r.text and "Traceback" not in r.text
    assert_nothing_stored(db, settings)


@pytest.mark.parametrize("filename", ["../../evil.onnx", "a/b.onnx", "nul\x00.onnx", "..", "x\\y.onnx"])
def test_path_like_filenames_are_refused(client, auth, tmp_path, db, settings, filename) -> None:
    r = upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx"), filename=filename)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "file"
    assert "filename" in r.json()["detail"]
    assert_nothing_stored(db, settings)


def test_form_problems(client, auth, tmp_path, db, settings) -> None:
    path = onnx_models.mlp(tmp_path / "m.onnx")
    no_file = client.post("/v1/models", headers=auth, files={"other": ("m.onnx", b"x")})
    assert no_file.status_code == 422 and "other" in no_file.json()["detail"]
    only_name = client.post("/v1/models", headers=auth, files={"name": (None, "x")})
    assert only_name.status_code == 422 and "'file' is required" in only_name.json()["detail"]
    not_multipart = client.post("/v1/models", headers=auth, content=path.read_bytes())
    assert not_multipart.status_code == 415
    bad_name = upload(client, auth, path, name="a" * 300)
    assert bad_name.status_code == 422 and bad_name.json()["errors"][0]["field"] == "name"
    blank = upload(client, auth, path, name="   ")
    assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "name"
    assert_nothing_stored(db, settings)
    empty = upload(client, auth, path, name="")  # an unfilled form field: as if not sent (Swagger UI sends it)
    assert empty.status_code == 201 and empty.json()["name"] == "m", empty.text


def test_check_time_limit_fails_only_that_upload(client, auth, tmp_path, settings, db) -> None:
    settings.sandbox_timeout_s = 0.05
    r = upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx"))
    assert r.status_code == 422 and r.json()["type"].endswith("/model-check-timeout")
    assert_nothing_stored(db, settings)
    settings.sandbox_timeout_s = 60
    assert upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx")).status_code == 201


def test_check_memory_limit_fails_only_that_upload(client, auth, tmp_path, settings, db) -> None:
    settings.sandbox_memory_mb = 600
    r = upload(client, auth, onnx_models.big_mlp(tmp_path / "big.onnx", megabytes=200))
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/model-check-memory-limit")
    assert_nothing_stored(db, settings)
    assert client.get("/healthz").status_code == 200


def test_unknown_route_and_method_are_problems(client, auth) -> None:
    r = client.get("/v1/nothing", headers=auth)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = client.put("/v1/models", headers=auth)
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM


def test_upload_download_delete_on_the_s3_store(tmp_path, db_url, s3_endpoint, s3_bucket, key) -> None:
    from service.app import create_app

    settings = s3_settings(tmp_path / "data", s3_endpoint, s3_bucket, "models", database_url=db_url)
    s3 = s3_client(s3_endpoint)
    path = onnx_models.cnn(tmp_path / "cnn.onnx")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        model = upload(client, auth, path).json()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        assert keys == [f"models/sha256/{model['sha256'][:2]}/{model['sha256']}"]
        assert client.get(f"/v1/models/{model['id']}/content", headers=auth).content == path.read_bytes()
        assert client.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
        assert s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


def test_the_same_bytes_registered_at_once_by_two_jobs_are_one_model(client, auth, tmp_path, db, settings) -> None:
    """Two jobs producing the same bytes for one tenant: the second waits on the unique index, then gets the first
    one's model (it used to fail the job as `internal` on the IntegrityError)."""
    from service.model_files import service as model_files
    from service.model_files.tables import ModelFile
    from tests.races import race

    uploaded = upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx")).json()
    row = db.get(ModelFile, uploaded["id"])
    fields = {
        "tenant_id": row.tenant_id,
        "name": "m-quantized",
        "filename": "model.quant.onnx",
        "sha256": "f" * 64,
        "size": 10,
        "blob_key": row.blob_key,
        "info": {},
        "source_job_id": None,
    }
    (made, created), (other, other_created) = race(
        settings.resolved_database_url, lambda session: model_files.register(db=session, **fields)
    )
    assert created and not other_created and other.id == made.id
    assert db.scalar(sa.select(sa.func.count()).select_from(ModelFile).where(ModelFile.sha256 == "f" * 64)) == 1


def test_a_model_with_a_non_latin_name_downloads_under_its_name(client, auth, tmp_path) -> None:
    from urllib.parse import unquote

    path = onnx_models.mlp(tmp_path / "m.onnx")
    with open(path, "rb") as f:
        r = client.post("/v1/models", headers=auth, files={"file": ("модель.onnx", f)}, data={"name": "模型"})
    assert r.status_code == 201, r.text
    got = client.get(f"/v1/models/{r.json()['id']}/content", headers=auth)
    assert got.status_code == 200 and got.content == path.read_bytes()
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="download.onnx"')  # an ASCII fallback for old clients
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == "模型.onnx"  # its name, RFC 6266 / 5987
