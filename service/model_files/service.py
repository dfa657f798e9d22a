"""Model files: upload (check in a sandbox, store, register), list, read, delete. A model with external data comes
as one archive (a bundle: engine.bundle), unpacked and checked member by member, stored part by part."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from engine.bundle import Bundle, BundleLimits, NoSpace, archive_format, safe_name, unpack
from engine.core.errors import EngineError
from engine.inspect import ModelInfo
from service.db import insert_once, new_id
from service.errors import not_found, problem_for
from service.model_files import archives
from service.model_files import repository as repo
from service.model_files.tables import ModelFile, ModelPart
from service.pagination import split_page
from service.sandboxing import check_in_sandbox
from service.settings import Settings
from service.storage import ObjectStore
from service.storage import service as blobs
from service.uploads import Upload, clean_name, no_room, too_large


def inspect_upload(*, settings: Settings, upload: Upload) -> ModelInfo:
    """Check and inspect the uploaded file in a child process with memory and time limits."""
    value = check_in_sandbox(
        settings=settings,
        target="engine.inspect:check_and_inspect",
        kwargs={"path": str(upload.path)},
        what="model",
    )
    return ModelInfo.model_validate(value)


def create_from_upload(
    *, db: Session, store: ObjectStore, settings: Settings, tenant_id: str, upload: Upload
) -> tuple[ModelFile, bool]:
    """Returns (model, created). The same bytes from the same tenant return the existing model; an archive is a
    bundle, the same files in any archive the same model."""
    name = clean_name(upload.fields.get("name"), upload.filename, default="model")
    fmt = "files" if upload.from_parts else archive_format(upload.path)
    if fmt is not None:
        return _create_bundle(
            db=db, store=store, settings=settings, tenant_id=tenant_id, upload=upload, name=name, fmt=fmt
        )
    if upload.size > settings.max_model_bytes:
        raise too_large(settings.max_model_bytes)
    existing = repo.get_by_sha256(db, tenant_id=tenant_id, sha256=upload.sha256)
    if existing is not None:
        return existing, False
    info = inspect_upload(settings=settings, upload=upload)
    key = blobs.store_file(db=db, store=store, path=upload.path, sha256=upload.sha256, size=upload.size)
    return register(
        db=db,
        tenant_id=tenant_id,
        name=name,
        filename=upload.filename,
        sha256=upload.sha256,
        size=upload.size,
        blob_key=key,
        info=info.model_dump(mode="json"),
    )


def _create_bundle(
    *, db: Session, store: ObjectStore, settings: Settings, tenant_id: str, upload: Upload, name: str, fmt: str
) -> tuple[ModelFile, bool]:
    """Unpack into a private folder (every member checked), check and inspect in the sandbox without loading the
    weights, store each file as its own blob, register the model with its parts."""
    limits = BundleLimits(settings.bundle_max_members, settings.max_bundle_bytes, settings.max_bundle_bytes)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.tmp_dir, prefix="bundle-") as folder:
        try:
            bundle = unpack(upload.path, Path(folder), limits)
        except EngineError as exc:
            raise problem_for(exc) from None
        except NoSpace as exc:
            raise no_room(exc) from None
        existing = repo.get_by_sha256(db, tenant_id=tenant_id, sha256=bundle.sha256)
        if existing is not None:
            return existing, False
        value = check_in_sandbox(
            settings=settings,
            target="engine.bundle:check_and_inspect_bundle",
            kwargs={
                "path": str(Path(folder) / bundle.graph),
                "root": folder,
                "runtime_max_bytes": settings.inspect_runtime_max_bytes,
            },
            what="model",
        )
        return _register_bundle(
            store=store,
            bundle=bundle,
            fmt=fmt,
            db=db,
            tenant_id=tenant_id,
            name=name,
            filename=upload.filename,
            info=ModelInfo.model_validate(value).model_dump(mode="json"),
        )


def _register_bundle(*, store: ObjectStore, bundle: Bundle, fmt: str, **fields: Any) -> tuple[ModelFile, bool]:
    """Each file of an unpacked bundle stored as its own blob, the model registered with its parts."""
    keys = [
        blobs.store_file(db=fields["db"], store=store, path=bundle.root / p.name, sha256=p.sha256, size=p.size)
        for p in bundle.parts
    ]
    return register(sha256=bundle.sha256, size=bundle.size, blob_key=keys[0], bundle=(fmt, bundle, keys), **fields)


def register(
    *,
    db: Session,
    tenant_id: str,
    name: str,
    filename: str | None,
    sha256: str,
    size: int,
    blob_key: str,
    info: dict[str, Any],
    source_job_id: str | None = None,
    bundle: tuple[str, Bundle, list[str]] | None = None,
) -> tuple[ModelFile, bool]:
    """The one way a model row is made (uploads and jobs that produce models): (model, created). The same bytes
    of the same tenant are one model, also when two requests or jobs register them at the same moment."""
    existing = repo.get_by_sha256(db, tenant_id=tenant_id, sha256=sha256)
    if existing is not None:
        return existing, False
    row = ModelFile(
        id=new_id("mdl"),
        tenant_id=tenant_id,
        name=name,
        filename=filename,
        sha256=sha256,
        size_bytes=size,
        blob_key=blob_key,
        info=info,
        source_job_id=source_job_id,
    )
    if bundle is not None:
        fmt, found, keys = bundle
        row.bundle_format = fmt
        row.parts = [
            ModelPart(position=i, name=p.name, sha256=p.sha256, size_bytes=p.size, blob_key=key)
            for i, (p, key) in enumerate(zip(found.parts, keys, strict=True))
        ]
    return insert_once(db, row, lambda: repo.get_by_sha256(db, tenant_id=tenant_id, sha256=sha256))


OWN_OUTPUT = BundleLimits(max_members=100_000, max_member_bytes=1 << 50, max_total_bytes=1 << 50)  # the engine's


def register_archive(*, store: ObjectStore, path: Path, **fields: Any) -> tuple[ModelFile, bool]:
    """A job's produced bundle (a tar the engine packed): unpacked beside it (checked as any archive), each file
    stored as its own blob, registered like an uploaded bundle."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix="bundle-") as folder:
        return _register_bundle(store=store, bundle=unpack(path, Path(folder), OWN_OUTPUT), fmt="tar", **fields)


def get(*, db: Session, tenant_id: str, model_id: str) -> ModelFile:
    row = repo.get(db, tenant_id=tenant_id, model_id=model_id)
    if row is None:
        raise not_found("model", model_id)
    return row


def list_page(*, db: Session, tenant_id: str, limit: int, cursor: str | None) -> tuple[list[ModelFile], str | None]:
    rows = repo.list_page(db, tenant_id=tenant_id, limit=limit + 1, cursor=cursor)
    return split_page(rows, limit)


def delete(*, db: Session, store: ObjectStore, tenant_id: str, model_id: str) -> None:
    row = get(db=db, tenant_id=tenant_id, model_id=model_id)
    keys = {row.blob_key} | {p.blob_key for p in row.parts}
    repo.delete(db, row)
    for key in sorted(keys):
        blobs.release(db=db, store=store, key=key)


def download(store: ObjectStore, row: ModelFile, folder: Path) -> Path:
    """The model's files into `folder` (each verified); the path of its .onnx file. A bundle's parts keep their
    names, so ONNX Runtime finds the external data beside the graph."""
    folder.mkdir(parents=True, exist_ok=True)
    if not row.parts:
        path = folder / "model.onnx"
        store.download(row.blob_key, path, sha256=row.sha256, size=row.size_bytes)
        return path
    for part in row.parts:
        target = folder / safe_name(part.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        store.download(part.blob_key, target, sha256=part.sha256, size=part.size_bytes)
    return folder / safe_name(row.parts[0].name)


def scratch_needed(row: ModelFile) -> int:
    """Bytes a download of the model takes on disk."""
    return sum(p.size_bytes for p in row.parts) or row.size_bytes


ARCHIVE_MEDIA_TYPES = {"tar": "application/x-tar", "zip": "application/zip"}


def archive_stream(store: ObjectStore, row: ModelFile) -> tuple[Iterator[bytes], int, str]:
    """A bundle as the archive format it was uploaded in (tar for a job's output), streamed part by part (each
    verified): (chunks, exact length, format)."""
    members = [
        archives.Member(
            p.name, p.size_bytes, partial(store.iter_chunks, p.blob_key, sha256=p.sha256, size=p.size_bytes)
        )
        for p in row.parts
    ]
    fmt = row.bundle_format if row.bundle_format in ARCHIVE_MEDIA_TYPES else "tar"
    stream = archives.zip_stream if fmt == "zip" else archives.tar_stream
    chunks, length = stream(members, row.created_at)
    return chunks, length, fmt
