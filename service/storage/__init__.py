"""Object store chosen by URL scheme: file:///path (local folder) or s3://bucket/prefix."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from service.settings import Settings
from service.storage.base import (
    BlobCorrupt,
    BlobMissing,
    ObjectStore,
    StoreError,
    blob_key,
)

__all__ = ["BlobCorrupt", "BlobMissing", "ObjectStore", "StoreError", "blob_key", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from service.storage.local import LocalStore

        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from service.storage.s3 import S3Store

        if not parsed.netloc:
            raise ValueError("ONNXSMITH_STORAGE_URL s3:// needs a bucket: s3://bucket/prefix")
        secret = settings.s3_secret_access_key
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )
    raise ValueError(f"ONNXSMITH_STORAGE_URL must start with file:// or s3://, got {parsed.scheme or url!r}")
