"""The object store interface: content-addressed blobs, verified on every read."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class StoreError(Exception):
    """A transient or configuration problem talking to the store."""


class BlobMissing(StoreError):
    pass


class BlobCorrupt(StoreError):
    """The bytes read back do not have the size or digest the database recorded."""


def blob_key(sha256: str) -> str:
    """The only way a key is made: from the content digest, never from a client's name or path."""
    if not _HEX64.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex characters")
    return f"sha256/{sha256[:2]}/{sha256}"


def check_key(key: str) -> str:
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "sha256" or blob_key(parts[2]) != key:
        raise ValueError(f"not a blob key: {key!r}")
    return key


class Verifier:
    """Hashes and counts bytes as they pass, then checks them against what was recorded."""

    def __init__(self, key: str, sha256: str, size: int) -> None:
        self.key, self.sha256, self.size = key, sha256, size
        self._hash = hashlib.sha256()
        self._count = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._count += len(chunk)
        if self._count > self.size:
            raise BlobCorrupt(f"blob {self.key} is larger than the recorded {self.size} bytes")

    def finish(self) -> None:
        if self._count != self.size:
            raise BlobCorrupt(f"blob {self.key} has {self._count} bytes, expected {self.size}")
        if self._hash.hexdigest() != self.sha256:
            raise BlobCorrupt(f"blob {self.key} does not match its sha256")


class ObjectStore(Protocol):
    """Implementations: LocalStore (file://) and S3Store (s3://)."""

    url: str

    def put_file(self, key: str, path: Path, *, sha256: str, size: int) -> None:
        """Store a local file under key. Idempotent: the same key always holds the same bytes."""

    def exists(self, key: str) -> bool: ...

    def iter_chunks(self, key: str, *, sha256: str, size: int) -> Iterator[bytes]:
        """Stream the blob; raises BlobCorrupt at the end if size or digest differ."""

    def download(self, key: str, dest: Path, *, sha256: str, size: int) -> None:
        """Copy the blob to a local file, verified; dest is removed if verification fails."""

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""

    def ping(self) -> None:
        """Raise StoreError if the store cannot be reached."""

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        """Every blob key in the store with its last-modified time (epoch seconds)."""


def download_via_chunks(store: ObjectStore, key: str, dest: Path, *, sha256: str, size: int) -> None:
    tmp = dest.with_name(dest.name + ".part")
    try:
        with open(tmp, "wb") as out:
            for chunk in store.iter_chunks(key, sha256=sha256, size=size):
                out.write(chunk)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
