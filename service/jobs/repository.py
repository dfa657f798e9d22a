"""All job SQL. Every status change is one conditional UPDATE, so two workers can never both run a job and a
stale worker can never overwrite a newer attempt (the `attempts` column is the attempt's fencing token)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.core.errors import ErrorCode
from service.db import utcnow
from service.jobs.tables import Job


def get(db: Session, *, tenant_id: str, job_id: str) -> Job | None:
    return db.scalar(sa.select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_any(db: Session, job_id: str) -> Job | None:
    """For workers: jobs are addressed by id alone (the message carries nothing else)."""
    return db.scalar(sa.select(Job).where(Job.id == job_id).execution_options(populate_existing=True))


def get_by_idempotency_key(db: Session, *, tenant_id: str, key: str) -> Job | None:
    return db.scalar(sa.select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def list_page(
    db: Session, *, tenant_id: str, limit: int, cursor: str | None, status: str | None, kind: str | None
) -> list[Job]:
    q = sa.select(Job).where(Job.tenant_id == tenant_id)
    if cursor:
        q = q.where(Job.id < cursor)
    if status:
        q = q.where(Job.status == status)
    if kind:
        q = q.where(Job.kind == kind)
    return list(db.scalars(q.order_by(Job.id.desc()).limit(limit)))


def _update(db: Session, job_id: str, where: list[Any], values: dict[str, Any]) -> int:
    result = db.execute(sa.update(Job).where(Job.id == job_id, *where).values(**values))
    return int(getattr(result, "rowcount", 0) or 0)  # a CursorResult for UPDATE


def claim(db: Session, job_id: str, *, lease: timedelta, max_attempts: int) -> int | None:
    """queued -> running, or take over a running job whose lease expired. Returns the attempt number."""
    now = utcnow()
    claimable = sa.or_(Job.status == "queued", sa.and_(Job.status == "running", Job.heartbeat_at < now - lease))
    row = db.execute(
        sa.update(Job)
        .where(Job.id == job_id, claimable, Job.attempts < max_attempts)
        .values(
            status="running",
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            progress=0.0,
            stage="starting",
        )
        .returning(Job.attempts)
    ).first()
    return int(row[0]) if row else None


def give_up(db: Session, job_id: str, *, lease: timedelta, max_attempts: int, detail: str) -> bool:
    """Fail a job that used all its deliveries without finishing (its workers died)."""
    now = utcnow()
    lost = sa.or_(Job.status == "queued", sa.and_(Job.status == "running", Job.heartbeat_at < now - lease))
    return (
        _update(
            db,
            job_id,
            [lost, Job.attempts >= max_attempts],
            {
                "status": "failed",
                "error_code": ErrorCode.WORKER_LOST.value,
                "error_detail": detail,
                "finished_at": now,
                "stage": "failed",
            },
        )
        == 1
    )


def heartbeat(db: Session, job_id: str, attempt: int, *, progress: float | None, stage: str | None) -> bool:
    """Record liveness (and progress); False when the job is no longer this attempt's to run."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if stage is not None:
        values["stage"] = stage[:200]
    return _update(db, job_id, [Job.status == "running", Job.attempts == attempt], values) == 1


def finish(
    db: Session,
    job_id: str,
    attempt: int,
    *,
    status: str,
    report: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_detail: str | None = None,
) -> bool:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "stage": status, "heartbeat_at": utcnow()}
    if status == "succeeded":
        values.update(progress=1.0, report=report)
    else:
        values.update(error_code=error_code, error_detail=(error_detail or "")[:4000])
    return _update(db, job_id, [Job.status == "running", Job.attempts == attempt], values) == 1


def requeue(db: Session, job_id: str, attempt: int, *, stage: str) -> bool:
    return (
        _update(
            db, job_id, [Job.status == "running", Job.attempts == attempt], {"status": "queued", "stage": stage[:200]}
        )
        == 1
    )


def cancel(db: Session, *, tenant_id: str, job_id: str) -> bool:
    now = utcnow()
    return (
        _update(
            db,
            job_id,
            [Job.tenant_id == tenant_id, Job.status.in_(("queued", "running"))],
            {"status": "cancelled", "finished_at": now, "stage": "cancelled"},
        )
        == 1
    )


RESENT_STAGE = "queued: its message was sent again"


def mark_enqueued(db: Session, job_id: str, *, stage: str | None = None) -> None:
    _update(db, job_id, [Job.status == "queued"], {"enqueued_at": utcnow()} | ({"stage": stage} if stage else {}))


def lost_running(db: Session, *, lease: timedelta, limit: int = 100) -> list[Job]:
    """Running jobs whose heartbeat stopped: their worker died or lost the database."""
    cutoff = utcnow() - lease
    q = sa.select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff).order_by(Job.id).limit(limit)
    return list(db.scalars(q))


def requeue_lost(db: Session, job_id: str, attempt: int, *, lease: timedelta) -> bool:
    cutoff = utcnow() - lease
    return (
        _update(
            db,
            job_id,
            [Job.status == "running", Job.attempts == attempt, Job.heartbeat_at < cutoff],
            {"status": "queued", "stage": "requeued: its worker stopped responding", "enqueued_at": utcnow()},
        )
        == 1
    )


def waiting_since(db: Session, *, older_than: timedelta, limit: int = 100) -> list[Job]:
    """Queued jobs whose last message was sent before the cutoff."""
    cutoff = utcnow() - older_than
    sent = sa.func.coalesce(Job.enqueued_at, Job.created_at)
    q = sa.select(Job).where(Job.status == "queued", sent < cutoff).order_by(Job.id).limit(limit)
    return list(db.scalars(q))


def count_by_kind_and_status(db: Session) -> list[tuple[str, str, int]]:
    q = sa.select(Job.kind, Job.status, sa.func.count()).group_by(Job.kind, Job.status)
    return [(k, s, int(n)) for k, s, n in db.execute(q)]


def delete(db: Session, row: Job) -> None:
    db.delete(row)
    db.flush()
