from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.model_files.tables import ModelFile


def get(db: Session, *, tenant_id: str, model_id: str) -> ModelFile | None:
    return db.scalar(sa.select(ModelFile).where(ModelFile.id == model_id, ModelFile.tenant_id == tenant_id))


def get_by_sha256(db: Session, *, tenant_id: str, sha256: str) -> ModelFile | None:
    return db.scalar(sa.select(ModelFile).where(ModelFile.tenant_id == tenant_id, ModelFile.sha256 == sha256))


def list_page(db: Session, *, tenant_id: str, limit: int, cursor: str | None) -> list[ModelFile]:
    q = sa.select(ModelFile).where(ModelFile.tenant_id == tenant_id)
    if cursor:
        q = q.where(ModelFile.id < cursor)
    return list(db.scalars(q.order_by(ModelFile.id.desc()).limit(limit)))


def delete(db: Session, row: ModelFile) -> None:
    db.delete(row)
    db.flush()
