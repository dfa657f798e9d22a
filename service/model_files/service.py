"""Model files: upload (check in a sandbox, store, register), list, read, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from engine.inspect import ModelInfo
from service.db import insert_once, new_id
from service.errors import not_found
from service.model_files import repository as repo
from service.model_files.tables import ModelFile
from service.pagination import split_page
from service.sandboxing import check_in_sandbox
from service.settings import Settings
from service.storage import ObjectStore
from service.storage import service as blobs
from service.uploads import Upload, clean_name


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
    """Returns (model, created). The same bytes from the same tenant return the existing model."""
    name = clean_name(upload.fields.get("name"), upload.filename, default="model")
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
    return insert_once(db, row, lambda: repo.get_by_sha256(db, tenant_id=tenant_id, sha256=sha256))


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
    repo.delete(db, row)
    blobs.release(db=db, store=store, key=row.blob_key)
