"""Blob rows: the lock that makes 'store a blob' and 'remove an unreferenced blob' safe together."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import Base, utcnow
from service.storage.tables import Blob


def lock_or_create(db: Session, *, key: str, sha256: str, size: int) -> None:
    """Insert the blob row, or lock the existing one, until the transaction ends.

    PostgreSQL: a row lock (ON CONFLICT DO UPDATE locks the row). SQLite: the write lock of the file.
    Either way a concurrent delete of the same blob waits until this transaction commits.
    """
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Blob).values(key=key, sha256=sha256, size_bytes=size, created_at=utcnow())
    stmt = stmt.on_conflict_do_update(index_elements=[Blob.key], set_={"sha256": stmt.excluded.sha256})
    db.execute(stmt)


def lock(db: Session, key: str) -> Blob | None:
    return db.scalar(sa.select(Blob).where(Blob.key == key).with_for_update())


def count_references(db: Session, key: str) -> int:
    """Rows of any table with a foreign key to blobs.key (models now; datasets and artifacts later)."""
    total = 0
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "blobs" and fk.column.name == "key":
                total += db.scalar(sa.select(sa.func.count()).select_from(table).where(fk.parent == key)) or 0
    return total


def delete(db: Session, blob: Blob) -> None:
    db.delete(blob)
    db.flush()
