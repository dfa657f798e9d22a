"""S3-compatible object store (AWS S3, MinIO, R2, ...) through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.storage.base import CHUNK, BlobMissing, StoreError, Verifier, check_key, download_via_chunks

# Files above 64 MiB go up as a multipart upload in 16 MiB parts: memory stays bounded.
TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=4)


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def _obj(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path, *, sha256: str, size: int) -> None:
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self._obj(key),
                Config=TRANSFER,
                ExtraArgs={"Metadata": {"sha256": sha256}},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"upload of {key} to {self.url} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._obj(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"cannot reach {self.url}: {exc}") from exc
        except BotoCoreError as exc:  # connection refused, timeouts: the store is unreachable
            raise StoreError(f"cannot reach {self.url}: {exc}") from exc

    def iter_chunks(self, key: str, *, sha256: str, size: int) -> Iterator[bytes]:
        verifier = Verifier(key, sha256, size)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._obj(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise BlobMissing(f"blob {key} is missing from the store") from exc
            raise StoreError(f"read of {key} from {self.url} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"read of {key} from {self.url} failed: {exc}") from exc
        try:
            for chunk in body.iter_chunks(CHUNK):
                verifier.update(chunk)
                yield chunk
        finally:
            body.close()
        verifier.finish()

    def download(self, key: str, dest: Path, *, sha256: str, size: int) -> None:
        download_via_chunks(self, key, dest, sha256=sha256, size=size)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._obj(key))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"delete of {key} from {self.url} failed: {exc}") from exc

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"bucket {self.bucket} is not reachable: {exc}") from exc

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    try:
                        yield check_key(key), obj["LastModified"].timestamp()
                    except ValueError:
                        continue
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"listing {self.url} failed: {exc}") from exc
