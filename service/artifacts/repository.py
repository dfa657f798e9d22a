from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.artifacts.tables import Artifact


def add(db: Session, row: Artifact) -> None:
    db.add(row)
    db.flush()


def list_for_job(db: Session, *, tenant_id: str, job_id: str) -> list[Artifact]:
    q = sa.select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.job_id == job_id)
    return list(db.scalars(q.order_by(Artifact.id)))


def get(db: Session, *, tenant_id: str, artifact_id: str) -> Artifact | None:
    return db.scalar(sa.select(Artifact).where(Artifact.id == artifact_id, Artifact.tenant_id == tenant_id))


def delete_for_job(db: Session, *, job_id: str) -> list[str]:
    """Delete a job's artifact rows; returns their blob keys (to release)."""
    rows = list(db.scalars(sa.select(Artifact).where(Artifact.job_id == job_id)))
    for row in rows:
        db.delete(row)
    db.flush()
    return [r.blob_key for r in rows]
