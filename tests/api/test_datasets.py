"""Dataset uploads through the API on a real database and store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import data_files
from tests.conftest import count_rows, stored_files


def upload(client, auth, path: Path, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/datasets", headers=auth, files={"file": (path.name, f)}, data=fields or None)


@pytest.mark.sqlite
def test_upload_npz_get_download_delete(client, auth, tmp_path, db, settings) -> None:
    x, y = data_files.classification(n=40)
    path = data_files.npz(tmp_path / "digits.npz", x=x, y=y)
    r = upload(client, auth, path)
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["format"], ds["kind"], ds["label"]) == ("digits", "npz", "samples", "y")
    assert ds["summary"]["sample_count"] == 40
    assert ds["summary"]["label"]["kind"] == "classification"
    assert upload(client, auth, path).json()["id"] == ds["id"]  # same bytes, same label choice: existing
    assert client.get(f"/v1/datasets/{ds['id']}/content", headers=auth).content == path.read_bytes()
    listed = client.get("/v1/datasets", headers=auth).json()
    assert [d["id"] for d in listed["items"]] == [ds["id"]]
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    assert count_rows(db, "datasets") == 0 and stored_files(settings) == []


def test_same_bytes_with_another_label_is_another_dataset(client, auth, tmp_path) -> None:
    x, y = data_files.classification(n=20, features=3)
    path = data_files.csv(tmp_path / "t.csv", x, y)
    a = upload(client, auth, path).json()
    b = upload(client, auth, path, label="f0")
    assert b.status_code == 201 and b.json()["id"] != a["id"] and b.json()["label"] == "f0"
    assert b.json()["summary"]["label"]["kind"] == "regression"


@pytest.mark.parametrize(("name", "fields"), [("history.json", {}), ("metrics.csv", {"kind": "history"})])
def test_histories(client, auth, tmp_path, name, fields) -> None:
    maker = data_files.keras_history if name.endswith("json") else data_files.lightning_history
    r = upload(client, auth, maker(tmp_path / name), **fields)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "history" and r.json()["summary"]["history"]["epochs"] > 0


def _bad_cases(tmp_path: Path):
    x, y = data_files.classification(n=10)
    return {
        "object-array": (data_files.object_npz(tmp_path / "o.npz"), {}, "invalid-dataset", "object dtype"),
        "huge-declared-shape": (data_files.lying_npz(tmp_path / "l.npz"), {}, "invalid-dataset", "declares shape"),
        "ragged-csv": (data_files.ragged_csv(tmp_path / "r.csv"), {}, "invalid-dataset", ""),
        "unknown-label": (data_files.npz(tmp_path / "u.npz", x=x, y=y), {"label": "nope"}, "unknown-label", "nope"),
        "not-a-zip": (_write(tmp_path / "n.npz", b"PK junk"), {}, "invalid-dataset", "npz"),
        "unknown-extension": (_write(tmp_path / "d.txt", b"1,2"), {}, "validation-error", "format"),
        "json-as-samples": (data_files.keras_history(tmp_path / "h.json"), {"kind": "samples"}, "validation-error", ""),
        "bad-history": (_write(tmp_path / "b.json", b'{"loss": "high"}'), {}, "invalid-dataset", "loss"),
        "empty": (_write(tmp_path / "e.csv", b""), {}, "invalid-dataset", "empty"),
        "binary-csv-history": (  # a PNG as a CSV history: was a 500 (UnicodeDecodeError); found by schemathesis
            _write(tmp_path / "p.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"),
            {"kind": "history", "format": "csv"},
            "invalid-dataset",
            "not UTF-8",
        ),
        "binary-csv-samples": (_write(tmp_path / "p2.csv", b"\xff\xfe\x00a,b\n1,2\n"), {}, "invalid-dataset", ""),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.sqlite
def test_bad_datasets_are_422_and_leave_nothing(client, auth, tmp_path, db, settings) -> None:
    for case, (path, fields, type_, words) in _bad_cases(tmp_path).items():
        r = upload(client, auth, path, **fields)
        assert r.status_code == 422, (case, r.text)
        assert r.json()["type"].endswith("/" + type_), (case, r.json())
        assert words in r.json()["detail"], (case, r.json())
        assert str(tmp_path) not in r.text
    assert count_rows(db, "datasets") == 0 and count_rows(db, "blobs") == 0 and stored_files(settings) == []


def test_another_tenants_dataset_is_a_404(client, auth, other_auth, tmp_path) -> None:
    ds = upload(client, auth, data_files.npz(tmp_path / "d.npz", x=np.ones((3, 2)))).json()
    assert client.get(f"/v1/datasets/{ds['id']}", headers=other_auth).status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=other_auth).status_code == 404


def test_an_unreadable_upload_is_refused_without_naming_the_servers_temp_file(client, auth, settings) -> None:
    r = client.post("/v1/datasets", headers=auth, files={"file": ("x.parquet", b"garbage, not parquet")})
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-dataset"), r.text
    detail = r.json()["detail"]
    assert "the uploaded file" in detail  # pyarrow's message named the spooled file's path
    assert str(settings.tmp_dir) not in detail and "upload-" not in detail and ".part" not in detail


def test_datasets_whose_summary_would_be_unbounded_are_refused_by_the_checking_child(client, auth, tmp_path) -> None:
    """A history of 10^6 keys held up an API process; an npz of 100k arrays made a 10.5 MB summary; JSON nested
    100k deep was a 500 (RecursionError). Each is a 422 naming the bound, decided in the sandboxed child."""
    import io
    import json
    import zipfile

    many_keys = json.dumps({f"m{i}": [0.1] for i in range(100_000)}).encode()
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # 5,000 one-element arrays
        for i in range(5000):
            member = io.BytesIO()
            np.save(member, np.zeros(1))
            zf.writestr(f"a{i}.npy", member.getvalue())
    cases = [
        ("history.json", many_keys, "at most 1,000 metrics"),
        ("history.json", deep, "nested too deeply"),
        ("many.npz", buffer.getvalue(), "at most 4,096 arrays"),
    ]
    for filename, content, words in cases:
        r = client.post("/v1/datasets", headers=auth, files={"file": (filename, content)})
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-dataset"), r.text[:300]
        assert words in r.json()["detail"], r.json()["detail"][:300]
    assert client.get("/v1/datasets", headers=auth).json()["items"] == []


def test_the_same_dataset_uploaded_at_once_is_one_row(client, auth, settings, db, tmp_path) -> None:
    """Identical dataset bytes uploaded concurrently made several rows (6 of 20); models were deduplicated, datasets
    were not. Same contract as models now: the second upload waits on the unique index and gets the first's row."""
    import hashlib

    import sqlalchemy as sa

    from service.datasets import service as datasets
    from service.datasets.tables import Dataset
    from service.storage import open_store
    from service.uploads import Upload
    from tests.races import race

    client.get("/v1/datasets", headers=auth)  # the tenant exists
    tenant_id = db.scalar(sa.text("SELECT tenant_id FROM api_keys LIMIT 1"))
    x, y = data_files.classification(n=30, features=4)
    path = data_files.npz(tmp_path / "d.npz", x=x, y=y)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store = open_store(settings)

    def upload(session):
        copy = tmp_path / f"spool-{id(session)}.npz"  # each request spools its own copy
        copy.write_bytes(path.read_bytes())
        spooled = Upload(path=copy, sha256=digest, size=copy.stat().st_size, filename="d.npz")
        return datasets.create_from_upload(
            db=session, store=store, settings=settings, tenant_id=tenant_id, upload=spooled
        )

    (first, created), (second, second_created) = race(settings.resolved_database_url, upload)
    assert created and not second_created and second.id == first.id
    assert db.scalar(sa.select(sa.func.count()).select_from(Dataset).where(Dataset.sha256 == digest)) == 1
