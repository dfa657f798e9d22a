from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class Dataset(Base):
    """Uploaded samples (npz/csv/parquet) or a training history (json/csv) of one tenant."""

    __tablename__ = "datasets"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "dedup_key"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    filename: Mapped[str | None] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(16))
    format: Mapped[str] = mapped_column(sa.String(16))
    label: Mapped[str | None] = mapped_column(sa.String(200))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # "<sha256>:<kind>:<label>": equal uploads are one row (NULL only on duplicates made before migration 0005)
    dedup_key: Mapped[str | None] = mapped_column(sa.String(300))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    blob_key: Mapped[str] = mapped_column(sa.ForeignKey("blobs.key"), index=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
