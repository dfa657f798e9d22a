"""The object store contract, against the local folder and a real S3-compatible HTTP endpoint."""

import hashlib
import os
from pathlib import Path

import pytest

from service.settings import Settings
from service.storage import BlobCorrupt, BlobMissing, blob_key, open_store
from tests.conftest import s3_settings


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return open_store(Settings(data_dir=tmp_path, storage_url=(tmp_path / "store").as_uri()))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(s3_settings(tmp_path, endpoint, bucket, "some/prefix"))


def _file(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_read_delete_roundtrip(store, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    path, sha = _file(tmp_path, data)
    key = blob_key(sha)
    assert not store.exists(key)
    store.put_file(key, path, sha256=sha, size=len(data))
    store.put_file(key, path, sha256=sha, size=len(data))  # idempotent
    assert store.exists(key)
    assert b"".join(store.iter_chunks(key, sha256=sha, size=len(data))) == data
    dest = tmp_path / "out.bin"
    store.download(key, dest, sha256=sha, size=len(data))
    assert dest.read_bytes() == data
    store.delete(key)
    store.delete(key)  # deleting a missing blob is fine
    assert not store.exists(key)
    store.ping()


def test_reads_verify_digest_and_size(store, tmp_path: Path) -> None:
    path, sha = _file(tmp_path, b"the real bytes")
    key = blob_key(sha)
    store.put_file(key, path, sha256=sha, size=14)
    with pytest.raises(BlobCorrupt):
        list(store.iter_chunks(key, sha256="0" * 64, size=14))
    with pytest.raises(BlobCorrupt):
        list(store.iter_chunks(key, sha256=sha, size=13))
    dest = tmp_path / "out.bin"
    with pytest.raises(BlobCorrupt):
        store.download(key, dest, sha256=sha, size=15)
    assert not dest.exists() and not dest.with_name("out.bin.part").exists()


def test_missing_blob(store) -> None:
    with pytest.raises(BlobMissing):
        list(store.iter_chunks(blob_key("a" * 64), sha256="a" * 64, size=1))


def test_keys_come_only_from_digests(store) -> None:
    for bad in ["../etc/passwd", "sha256/aa/../../x", "A" * 64, ""]:
        with pytest.raises(ValueError):
            blob_key(bad) if "/" not in bad else store.exists(bad)


def test_large_file_goes_up_in_parts(store, tmp_path: Path) -> None:
    data = os.urandom(70 << 20)  # above the 64 MiB multipart threshold
    path, sha = _file(tmp_path, data)
    key = blob_key(sha)
    store.put_file(key, path, sha256=sha, size=len(data))
    assert hashlib.sha256(b"".join(store.iter_chunks(key, sha256=sha, size=len(data)))).hexdigest() == sha


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        open_store(Settings(data_dir=tmp_path, storage_url="ftp://example/x"))


def test_iter_keys_lists_blobs_with_times(store, tmp_path: Path) -> None:
    path, sha = _file(tmp_path, b"listed")
    store.put_file(blob_key(sha), path, sha256=sha, size=6)
    keys = dict(store.iter_keys())
    assert list(keys) == [blob_key(sha)] and keys[blob_key(sha)] > 0
