"""Local-folder object store (the embedded default)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from service.storage.base import CHUNK, BlobMissing, StoreError, Verifier, check_key, download_via_chunks


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: Path, *, sha256: str, size: int) -> None:
        dest = self._path(key)
        if dest.exists() and dest.stat().st_size == size:
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Link (same filesystem: no copy) or copy to a temp name in the same folder, fsync, then rename:
        # readers never see half a blob.
        tmp = dest.parent / f".put-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            try:
                os.link(path, tmp)
            except OSError:  # another filesystem, or links not supported
                with open(tmp, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, CHUNK)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_chunks(self, key: str, *, sha256: str, size: int) -> Iterator[bytes]:
        verifier = Verifier(key, sha256, size)
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed below, generator lifetime
        except FileNotFoundError as exc:
            raise BlobMissing(f"blob {key} is missing from the store") from exc
        with f:
            while chunk := f.read(CHUNK):
                verifier.update(chunk)
                yield chunk
        verifier.finish()

    def download(self, key: str, dest: Path, *, sha256: str, size: int) -> None:
        download_via_chunks(self, key, dest, sha256=sha256, size=size)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StoreError(f"store folder {self.root} is not a writable folder")

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for path in base.glob("*/*"):
            if path.is_file() and not path.name.startswith("."):
                key = f"sha256/{path.parent.name}/{path.name}"
                try:
                    yield check_key(key), path.stat().st_mtime
                except ValueError:
                    continue  # not ours
