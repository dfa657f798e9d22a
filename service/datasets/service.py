"""Datasets: upload (checked and summarized in the sandbox), list, read, delete."""

from __future__ import annotations

from sqlalchemy.orm import Session

from engine.datasets import DatasetSummary, format_from_filename
from service.datasets import repository as repo
from service.datasets.tables import Dataset
from service.db import insert_once, new_id
from service.errors import AppError, not_found
from service.pagination import split_page
from service.sandboxing import check_in_sandbox
from service.settings import Settings
from service.storage import ObjectStore
from service.storage import service as blobs
from service.uploads import Upload, clean_name

KINDS = ("samples", "history")
FORMATS = ("npz", "csv", "parquet", "json")


def _field_error(field: str, detail: str) -> AppError:
    return AppError(
        422,
        "validation-error",
        detail,
        title="Invalid request",
        errors=[{"location": "body", "field": field, "message": detail, "type": "invalid"}],
    )


def _resolve_kind_and_format(upload: Upload) -> tuple[str, str]:
    fmt = upload.fields.get("format") or format_from_filename(upload.filename)
    if fmt not in FORMATS:
        raise _field_error(
            "format",
            "cannot tell the format: name the file .npz, .csv, .parquet or .json, or send the form field format",
        )
    kind = upload.fields.get("kind") or ("history" if fmt == "json" else "samples")
    if kind not in KINDS:
        raise _field_error("kind", "kind must be 'samples' or 'history'")
    if kind == "history" and fmt not in ("json", "csv"):
        raise _field_error("kind", "a history is a .json (Keras) or .csv (Lightning CSVLogger) file")
    if kind == "samples" and fmt == "json":
        raise _field_error("kind", ".json files are training histories; samples are .npz, .csv or .parquet")
    return kind, fmt


def create_from_upload(
    *, db: Session, store: ObjectStore, settings: Settings, tenant_id: str, upload: Upload
) -> tuple[Dataset, bool]:
    kind, fmt = _resolve_kind_and_format(upload)
    label = upload.fields.get("label") or None
    if label is not None and kind == "history":
        raise _field_error("label", "a history has no label")
    name = clean_name(upload.fields.get("name"), upload.filename, default="dataset")
    existing = repo.find_same(db, tenant_id=tenant_id, sha256=upload.sha256, kind=kind, label=label)
    if existing is not None:
        return existing, False
    value = check_in_sandbox(
        settings=settings,
        target="engine.datasets:inspect_dataset",
        kwargs={"path": str(upload.path), "fmt": fmt, "kind": kind, "label": label},
        what="dataset",
    )
    summary = DatasetSummary.model_validate(value)
    key = blobs.store_file(db=db, store=store, path=upload.path, sha256=upload.sha256, size=upload.size)
    resolved = summary.label.name if summary.label else None
    same = repo.dedup_key(sha256=upload.sha256, kind=kind, label=resolved)
    row = Dataset(
        id=new_id("ds"),
        tenant_id=tenant_id,
        name=name,
        filename=upload.filename,
        kind=kind,
        format=fmt,
        label=resolved,
        sha256=upload.sha256,
        dedup_key=same,
        size_bytes=upload.size,
        blob_key=key,
        summary=summary.model_dump(mode="json"),
    )
    return insert_once(db, row, lambda: repo.get_by_dedup_key(db, tenant_id=tenant_id, key=same))


def get(*, db: Session, tenant_id: str, dataset_id: str) -> Dataset:
    row = repo.get(db, tenant_id=tenant_id, dataset_id=dataset_id)
    if row is None:
        raise not_found("dataset", dataset_id)
    return row


def list_page(*, db: Session, tenant_id: str, limit: int, cursor: str | None) -> tuple[list[Dataset], str | None]:
    rows = repo.list_page(db, tenant_id=tenant_id, limit=limit + 1, cursor=cursor)
    return split_page(rows, limit)


def delete(*, db: Session, store: ObjectStore, tenant_id: str, dataset_id: str) -> None:
    row = get(db=db, tenant_id=tenant_id, dataset_id=dataset_id)
    repo.delete(db, row)
    blobs.release(db=db, store=store, key=row.blob_key)
