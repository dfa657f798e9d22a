"""All worker-presence SQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db import utcnow
from service.fleet.tables import WorkerPresence


def upsert(db: Session, *, name: str, queues: list[str], capabilities: list[str], machine: dict | None = None) -> None:
    row = db.get(WorkerPresence, name)
    if row is None:
        db.add(WorkerPresence(name=name, queues=queues, capabilities=capabilities, machine=machine or {}))
    else:
        row.queues, row.capabilities, row.seen_at = queues, capabilities, utcnow()
        row.machine = machine or {}
    db.flush()


def remove(db: Session, *, name: str) -> None:
    db.execute(sa.delete(WorkerPresence).where(WorkerPresence.name == name))


def seen_since(db: Session, since: datetime) -> list[WorkerPresence]:
    return list(db.scalars(sa.select(WorkerPresence).where(WorkerPresence.seen_at >= since)))


def forget_before(db: Session, before: datetime) -> int:
    result = db.execute(sa.delete(WorkerPresence).where(WorkerPresence.seen_at < before))
    return int(getattr(result, "rowcount", 0) or 0)  # a CursorResult for DELETE
