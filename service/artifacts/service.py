from __future__ import annotations

from sqlalchemy.orm import Session

from service.artifacts import repository as repo
from service.artifacts.tables import Artifact
from service.errors import not_found


def list_for_job(*, db: Session, tenant_id: str, job_id: str) -> list[Artifact]:
    return repo.list_for_job(db, tenant_id=tenant_id, job_id=job_id)


def get(*, db: Session, tenant_id: str, artifact_id: str) -> Artifact:
    row = repo.get(db, tenant_id=tenant_id, artifact_id=artifact_id)
    if row is None:
        raise not_found("artifact", artifact_id)
    return row
