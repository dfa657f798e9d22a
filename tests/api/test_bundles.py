"""Models with external data, uploaded as one archive (a bundle): checked member by member, stored part by part,
deduplicated by their files, downloaded as a tar, refused clearly with nothing stored when hostile."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.model_files.tables import ModelFile
from tests import bundles, onnx_models
from tests.api.test_models import PROBLEM, assert_nothing_stored, upload
from tests.conftest import count_rows, s3_client, s3_settings, stored_files


@pytest.mark.sqlite
def test_bundle_upload_inspect_dedup_download_delete(client, auth, tmp_path, db, settings) -> None:
    folder = bundles.with_external_data(tmp_path / "m")
    files = bundles.files_of(folder)
    r = upload(client, auth, bundles.tar_of(tmp_path / "mlp.tar", files))
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["name"] == "mlp" and model["bundle_format"] == "tar"
    assert [(p["name"], p["size_bytes"]) for p in model["parts"]] == [(n, len(b)) for n, b in files]
    assert [p["sha256"] for p in model["parts"]] == [hashlib.sha256(b).hexdigest() for _, b in files]
    assert model["size_bytes"] == sum(len(b) for _, b in files)
    info = model["info"]
    assert info["external_data_bytes"] == (64 * 32 + 32 + 32 * 10 + 10) * 4 and info["runtime_checked"] is True
    assert info["parameter_count"] == 64 * 32 + 32 + 32 * 10 + 10 and info["macs_per_sample"] == 64 * 32 + 32 * 10

    # the same files in a zip, in another order, are the same model
    again = upload(client, auth, bundles.zip_of(tmp_path / "again.zip", files[::-1]))
    assert again.status_code == 200 and again.json()["id"] == model["id"]
    assert count_rows(db, "models") == 1 and count_rows(db, "blobs") == 2

    content = client.get(f"/v1/models/{model['id']}/content", headers=auth)
    assert content.status_code == 200 and content.headers["content-type"] == "application/x-tar"
    assert int(content.headers["content-length"]) == len(content.content)
    unpacked = tmp_path / "download"
    with tarfile.open(fileobj=io.BytesIO(content.content)) as t:
        t.extractall(unpacked, filter="data")
    assert bundles.files_of(unpacked) == files
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    original = onnx_models.mlp(tmp_path / "single.onnx")
    outputs = [ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (original, unpacked / "model.onnx")]
    np.testing.assert_array_equal(outputs[0], outputs[1])

    assert client.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
    assert count_rows(db, "models") == 0 and count_rows(db, "model_parts") == 0 and count_rows(db, "blobs") == 0
    assert stored_files(settings) == []


def test_a_zip_bundle_downloads_as_a_zip_that_uploads_as_the_same_model(client, auth, tmp_path) -> None:
    files = bundles.files_of(bundles.with_external_data(tmp_path / "m", data="weights/all.bin"))
    model = upload(client, auth, bundles.zip_of(tmp_path / "mlp.zip", files)).json()
    assert model["bundle_format"] == "zip"
    content = client.get(f"/v1/models/{model['id']}/content", headers=auth)
    assert content.status_code == 200 and content.headers["content-type"] == "application/zip"
    assert 'filename="mlp.zip"' in content.headers["content-disposition"]
    assert int(content.headers["content-length"]) == len(content.content)
    with zipfile.ZipFile(io.BytesIO(content.content)) as z:
        assert z.testzip() is None and [(i.filename, z.read(i)) for i in z.infolist()] == files
    (tmp_path / "again.zip").write_bytes(content.content)
    again = upload(client, auth, tmp_path / "again.zip")
    assert again.status_code == 200 and again.json()["id"] == model["id"]


def test_a_bundle_in_a_folder_with_nested_data_files(client, auth, tmp_path) -> None:
    """The .onnx file inside a folder, its data in a sub-folder: locations resolve from the .onnx file's folder."""
    folder = bundles.with_external_data(tmp_path / "m", data="weights/all.bin")
    members = [(f"export/{name}", data) for name, data in bundles.files_of(folder)]
    r = upload(client, auth, bundles.tar_of(tmp_path / "nested.tar", members))
    assert r.status_code == 201, r.text
    assert [p["name"] for p in r.json()["parts"]] == ["export/model.onnx", "export/weights/all.bin"]


def test_big_bundles_are_checked_without_loading_their_weights(client, auth, tmp_path, settings) -> None:
    settings.inspect_runtime_max_bytes = 1000
    folder = bundles.with_external_data(tmp_path / "m")
    r = upload(client, auth, bundles.tar_of(tmp_path / "m.tar", bundles.files_of(folder)))
    assert r.status_code == 201, r.text
    assert r.json()["info"]["runtime_checked"] is False and r.json()["info"]["parameter_count"] == 2410


def test_kinds_that_load_the_model_whole_refuse_a_bundle_over_protobufs_limit_at_submit(
    client, auth, tmp_path, db, monkeypatch
) -> None:
    """Every kind runs on a bundle that fits in one model file; past protobuf's limit only the kinds that read the
    weights where they lie (Kind.external_data) take it, the others refuse at submit naming the limit."""
    folder = bundles.with_external_data(tmp_path / "m")
    model_id = upload(client, auth, bundles.tar_of(tmp_path / "m.tar", bundles.files_of(folder))).json()["id"]
    prune = {"kind": "prune", "model_id": model_id, "params": {"method": "magnitude", "ratio": 0.5}}
    dynamic = {"kind": "quantize", "model_id": model_id, "params": {"mode": "dynamic"}}
    assert client.post("/v1/jobs", headers=auth, json=prune).status_code == 202
    assert client.post("/v1/jobs", headers=auth, json=dynamic).status_code == 202

    row = db.get(ModelFile, model_id)  # as if its weights were 3 GiB (a test cannot upload that much in seconds)
    row.info = row.info | {"initializer_bytes": 3 << 30, "external_data_bytes": 3 << 30}
    db.commit()
    r = client.post("/v1/jobs", headers=auth, json=prune)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    detail = r.json()["detail"]
    assert "prune holds the whole model in memory, up to 2,080,374,784 bytes" in detail, detail
    assert "3,221,225,472 bytes of weights" in detail and "evaluate" in detail and "quantize" in detail, detail
    r = client.post("/v1/jobs", headers=auth, json=dynamic)
    assert r.status_code == 422 and "weight_only (rtn) quantizes it one tensor at a time" in r.json()["detail"]
    weight_only = {"kind": "quantize", "model_id": model_id, "params": {"mode": "weight_only"}}
    assert client.post("/v1/jobs", headers=auth, json=weight_only).status_code == 202


def _hostile(tmp_path, case: str):
    good = bundles.files_of(bundles.with_external_data(tmp_path / "m"))
    onnx_bytes = dict(good)["model.onnx"]
    tar, zip_ = tmp_path / f"{case}.tar", tmp_path / f"{case}.zip"
    if case == "traversal":
        return bundles.tar_of(tar, [*good, ("../evil.bin", b"x")]), "'..'"
    if case == "absolute":
        return bundles.tar_of(tar, [*good, ("/etc/evil.bin", b"x")]), "absolute path"
    if case == "symlink":
        return bundles.tar_of(tar, good[:1], [bundles.link("model.onnx.data", "/etc/passwd")]), "symbolic link"
    if case == "zip-symlink":
        return bundles.zip_of(zip_, good[:1], {"model.onnx.data": "/etc/passwd"}), "symbolic link"
    if case == "hardlink":
        return bundles.tar_of(tar, good[:1], [bundles.link("model.onnx.data", "/etc/passwd", tarfile.LNKTYPE)]), (
            "hard link"
        )
    if case == "device":
        return bundles.tar_of(tar, good, [bundles.link("tty", "", tarfile.CHRTYPE)]), "device or FIFO"
    if case == "duplicate":
        return bundles.tar_of(tar, [*good, good[1]]), "appears twice"
    if case == "larger-than-declared":
        return bundles.zip_declaring_less(zip_, "model.onnx.data", dict(good)["model.onnx.data"], 10), ("declared size")
    if case == "truncated":
        raw = bundles.tar_of(tar, good).read_bytes()
        tar.write_bytes(raw[: len(raw) // 2])
        return tar, "damaged or truncated"
    if case == "too-many-members":
        return bundles.tar_of(tar, [*good, *[(f"extra{i}.txt", b"x") for i in range(5)]]), "more than 4 members"
    if case == "zip-too-many-members":  # counted from the end record, before zipfile reads the directory
        return bundles.zip_of(zip_, [*good, *[(f"extra{i}.txt", b"x") for i in range(5)]]), "more than 4 members"
    if case == "zip-bomb":  # 4 MB of zeros deflate to a few kB: the unpacked size is what is bounded
        return bundles.zip_of(zip_, [*good, ("zeros.bin", bytes(4 << 20))]), "is over 1048576 bytes"
    if case == "no-onnx":
        return bundles.tar_of(tar, good[1:]), "exactly one .onnx file (found none)"
    if case == "two-onnx":
        return bundles.tar_of(tar, [*good, ("other.onnx", onnx_bytes)]), "exactly one .onnx file"
    location_cases = {
        "location-escapes": ("../outside.bin", "without '..'"),
        "location-absolute": ("/etc/passwd", "relative path"),
        "location-missing": ("missing.bin", "is not a file of the bundle"),
        "location-short": ("short.bin", "asks for bytes 0..8192 of a 10-byte file"),
    }
    location, why = location_cases[case]
    model = bundles.model_with_location(location)
    members = [("model.onnx", model.SerializeToString()), ("short.bin", b"0123456789")]
    return bundles.tar_of(tar, members), why


HOSTILE = [
    "traversal", "absolute", "symlink", "zip-symlink", "hardlink", "device", "duplicate", "larger-than-declared",
    "truncated", "too-many-members", "zip-too-many-members", "zip-bomb", "no-onnx", "two-onnx",
    "location-escapes", "location-absolute", "location-missing", "location-short",
]  # fmt: skip


@pytest.mark.sqlite
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_with_nothing_stored(client, auth, tmp_path, db, settings, case) -> None:
    settings.bundle_max_members, settings.max_bundle_bytes = 4, 1 << 20
    path, why = _hostile(tmp_path, case)
    r = upload(client, auth, path)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert why in problem["detail"], problem
    expected = "invalid-external-data" if case.startswith("location") else "invalid-archive"
    assert problem["type"].endswith(expected), problem
    assert "/tmp" not in problem["detail"] and str(settings.data_dir) not in problem["detail"]
    assert_nothing_stored(db, settings)


def test_a_single_file_with_external_data_says_to_send_an_archive(client, auth, tmp_path, db, settings) -> None:
    path = onnx_models.external_data(tmp_path / "m.onnx", "weights.bin")
    r = upload(client, auth, path)
    assert r.status_code == 422 and ".zip or .tar archive" in r.json()["detail"]
    assert_nothing_stored(db, settings)


def test_an_archive_upload_still_keeps_single_files_under_their_own_limit(client, auth, tmp_path, settings) -> None:
    settings.max_model_bytes = 1000
    r = upload(client, auth, onnx_models.mlp(tmp_path / "m.onnx"))
    assert r.status_code == 413 and r.json()["limit_bytes"] == 1000
    folder = bundles.with_external_data(tmp_path / "b")
    assert upload(client, auth, bundles.tar_of(tmp_path / "b.tar", bundles.files_of(folder))).status_code == 201


def test_the_onnx_loader_is_never_asked_to_follow_a_hostile_location(tmp_path) -> None:
    """The check resolves locations itself; onnx.load with external data is not called on the upload."""
    from engine.bundle import check_locations
    from engine.core.errors import EngineError

    model = bundles.model_with_location("../../../../etc/passwd")
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(EngineError) as exc:
        check_locations(onnx.load(str(path), load_external_data=False), path, tmp_path)
    assert exc.value.code == "invalid_external_data"


def test_a_bundle_on_the_s3_store_is_its_parts(tmp_path, db_url, s3_endpoint, s3_bucket, key) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = s3_settings(tmp_path / "data", s3_endpoint, s3_bucket, "models", database_url=db_url)
    s3 = s3_client(s3_endpoint)
    files = bundles.files_of(bundles.with_external_data(tmp_path / "m"))
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        model = upload(client, auth, bundles.tar_of(tmp_path / "m.tar", files)).json()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
        assert keys == sorted(f"models/sha256/{p['sha256'][:2]}/{p['sha256']}" for p in model["parts"])
        content = client.get(f"/v1/models/{model['id']}/content", headers=auth).content
        with tarfile.open(fileobj=io.BytesIO(content)) as t:
            assert [(m.name, t.extractfile(m).read()) for m in t] == files  # type: ignore[union-attr]
        assert client.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
        assert s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []


def _parts(client, auth, files: list[tuple[str, bytes]], graph: tuple[str, bytes] | None = None):
    """A model as its .onnx file (`file`) and one `data` part per data file, named by its location."""
    graph = graph or files[0]
    multipart = [("file", graph), *(("data", f) for f in files if f is not graph)]
    return client.post("/v1/models", headers=auth, files=multipart)


@pytest.mark.sqlite
def test_an_onnx_file_with_named_data_parts_is_a_bundle(client, auth, tmp_path, db, settings) -> None:
    files = bundles.files_of(bundles.with_external_data(tmp_path / "m", data="weights/all.bin"))
    r = _parts(client, auth, files)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["bundle_format"] == "files" and model["name"] == "model"
    assert [(p["name"], p["size_bytes"]) for p in model["parts"]] == [(n, len(b)) for n, b in files]
    assert model["info"]["external_data_bytes"] == len(dict(files)["weights/all.bin"])
    # the same files as an archive are the same model
    again = upload(client, auth, bundles.tar_of(tmp_path / "m.tar", files))
    assert again.status_code == 200 and again.json()["id"] == model["id"]
    for name, data in files:  # each file back on its own, by its name in the bundle
        got = client.get(f"/v1/models/{model['id']}/files/{name}", headers=auth)
        assert (
            got.status_code == 200
            and got.content == data
            and got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        )
    missing = client.get(f"/v1/models/{model['id']}/files/other.bin", headers=auth)
    assert missing.status_code == 404 and "other.bin" in missing.json()["detail"]
    content = client.get(f"/v1/models/{model['id']}/content", headers=auth)
    assert content.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(content.content)) as t:
        assert [(m.name, t.extractfile(m).read()) for m in t] == files  # type: ignore[union-attr]
    assert list(settings.tmp_dir.glob("*")) == []


def _bad_parts(tmp_path, case: str):
    files = bundles.files_of(bundles.with_external_data(tmp_path / "m"))
    graph, data = files
    if case == "no-filename":
        return [("file", graph), ("data", (None, data[1]))], "needs a filename"
    if case == "traversal":
        return [("file", graph), ("data", ("../model.onnx.data", data[1]))], "leaves the archive ('..')"
    if case == "absolute":
        return [("file", graph), ("data", ("/etc/model.onnx.data", data[1]))], "absolute path"
    if case == "twice":
        return [("file", graph), ("data", data), ("data", data)], "'model.onnx.data' is sent twice"
    if case == "onnx-as-data":
        return [("file", graph), ("data", ("other.onnx", data[1]))], "is an .onnx file"
    if case == "archive-with-data":
        archive = bundles.tar_of(tmp_path / "b.tar", files).read_bytes()
        return [("file", ("b.tar", archive)), ("data", data)], "not with an archive"
    if case == "wrong-name":  # the model names model.onnx.data; the part is called something else
        return [("file", graph), ("data", ("weights.bin", data[1]))], "is not a file of the bundle"
    if case == "missing-data":  # a data part, but not the one the model needs
        return [("file", graph), ("data", ("extra.bin", b"x"))], "is not a file of the bundle"
    raise AssertionError(case)


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "case",
    [
        "no-filename",
        "traversal",
        "absolute",
        "twice",
        "onnx-as-data",
        "archive-with-data",
        "wrong-name",
        "missing-data",
    ],
)
def test_bad_data_parts_are_refused_with_nothing_stored(client, auth, tmp_path, db, settings, case) -> None:
    multipart, why = _bad_parts(tmp_path, case)
    r = client.post("/v1/models", headers=auth, files=multipart)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert why in r.json()["detail"], r.json()
    assert_nothing_stored(db, settings)


@pytest.mark.sqlite
def test_data_parts_over_the_body_limit_are_refused_as_they_stream(client, auth, tmp_path, db, settings) -> None:
    settings.max_model_bytes, settings.max_bundle_bytes = 1 << 20, 1 << 20
    graph, data = bundles.files_of(bundles.with_external_data(tmp_path / "m"))
    r = client.post("/v1/models", headers=auth, files=[("file", graph), ("data", ("big.bin", bytes(2 << 20)))])
    assert r.status_code == 413 and r.json()["limit_bytes"] == 1 << 20
    assert_nothing_stored(db, settings)


def test_an_empty_unnamed_data_part_is_an_unfilled_file_picker(client, auth, tmp_path) -> None:
    """HTML forms send an empty file input as a part without a filename and without bytes: nothing to refuse."""
    graph = ("m.onnx", onnx_models.mlp(tmp_path / "m.onnx").read_bytes())
    r = client.post("/v1/models", headers=auth, files=[("file", graph), ("data", ("", b""))])
    assert r.status_code == 201 and r.json()["bundle_format"] is None and r.json()["parts"] == [], r.text
