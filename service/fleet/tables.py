from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class WorkerPresence(Base):
    """A running worker process and what it can do, refreshed by the worker every reconcile interval.

    The API reads it to refuse, at submit, a job no live worker could run (e.g. `distill` without PyTorch).
    A row whose `seen_at` is older than the presence TTL belongs to a worker that stopped without saying so."""

    __tablename__ = "worker_presence"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # celery hostname + pid
    queues: Mapped[list[str]] = mapped_column(JSONType, default=list)
    capabilities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # the CPU the worker measures on: model, int8_isa, fp16_native, cpu_flags (engine.machine); int8 speed-ups differ
    # about 2x between AVX2 and VNNI, so the same quantize request may rightly pick differently on another worker
    machine: Mapped[dict] = mapped_column(JSONType, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
