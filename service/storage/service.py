"""Storing and releasing content-addressed blobs, with their database rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.storage import repository as repo
from service.storage.base import ObjectStore, blob_key

log = logging.getLogger("onnxsmith.storage")


def store_file(*, db: Session, store: ObjectStore, path: Path, sha256: str, size: int) -> str:
    """Make sure the blob exists in the store and has a (locked) row; return its key."""
    key = blob_key(sha256)
    repo.lock_or_create(db, key=key, sha256=sha256, size=size)
    if not store.exists(key):
        store.put_file(key, path, sha256=sha256, size=size)
    return key


def read(*, store: ObjectStore, row: Any) -> Iterator[bytes]:
    """Stream the blob behind a model, dataset or artifact row, verified against its size and sha256."""
    return store.iter_chunks(row.blob_key, sha256=row.sha256, size=row.size_bytes)


def release(*, db: Session, store: ObjectStore, key: str) -> bool:
    """Call after deleting a referencing row: removes the blob if nothing references it any more."""
    blob = repo.lock(db, key)
    if blob is None or repo.count_references(db, key) > 0:
        return False
    repo.delete(db, blob)
    store.delete(key)
    log.info("removed blob %s", key)
    return True
