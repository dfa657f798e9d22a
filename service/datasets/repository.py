from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.datasets import LABEL_NAMES
from service.datasets.tables import Dataset


def get(db: Session, *, tenant_id: str, dataset_id: str) -> Dataset | None:
    return db.scalar(sa.select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))


def get_many(db: Session, *, tenant_id: str, ids: list[str]) -> dict[str, Dataset]:
    rows = db.scalars(sa.select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.id.in_(ids)))
    return {r.id: r for r in rows}


def find_same(db: Session, *, tenant_id: str, sha256: str, kind: str, label: str | None) -> Dataset | None:
    """The same bytes uploaded before with an equivalent label choice. Without an explicit label, the
    label was picked by the default rule (an array/column named y or label), so those rows match too."""
    q = sa.select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.sha256 == sha256, Dataset.kind == kind)
    if label is None:
        q = q.where(sa.or_(Dataset.label.is_(None), Dataset.label.in_(LABEL_NAMES)))
    else:
        q = q.where(Dataset.label == label)
    return db.scalars(q.order_by(Dataset.id).limit(1)).first()


def dedup_key(*, sha256: str, kind: str, label: str | None) -> str:
    return f"{sha256}:{kind}:{label or ''}"


def get_by_dedup_key(db: Session, *, tenant_id: str, key: str) -> Dataset | None:
    return db.scalar(sa.select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.dedup_key == key))


def list_page(db: Session, *, tenant_id: str, limit: int, cursor: str | None) -> list[Dataset]:
    q = sa.select(Dataset).where(Dataset.tenant_id == tenant_id)
    if cursor:
        q = q.where(Dataset.id < cursor)
    return list(db.scalars(q.order_by(Dataset.id.desc()).limit(limit)))


def delete(db: Session, row: Dataset) -> None:
    db.delete(row)
    db.flush()
