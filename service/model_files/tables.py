from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, JSONType, UTCDateTime, utcnow


class ModelFile(Base):
    """An uploaded (or job-produced) ONNX model of one tenant."""

    __tablename__ = "models"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "sha256"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    filename: Mapped[str | None] = mapped_column(sa.String(255))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    blob_key: Mapped[str] = mapped_column(sa.ForeignKey("blobs.key"), index=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSONType)
    source_job_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    bundle_format: Mapped[str | None] = mapped_column(sa.String(10), default=None)  # 'tar' | 'zip' for bundles
    parts: Mapped[list[ModelPart]] = relationship(
        order_by="ModelPart.position", cascade="all, delete-orphan", lazy="selectin"
    )


class ModelPart(Base):
    """One file of a bundle (a model with external data): the .onnx file first (position 0), then its data files.
    The model's own sha256 is the bundle's (engine.bundle.manifest_digest); each part has its own blob."""

    __tablename__ = "model_parts"

    model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(1000))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    blob_key: Mapped[str] = mapped_column(sa.ForeignKey("blobs.key"), index=True)
