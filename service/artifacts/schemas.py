from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    role: str
    filename: str
    media_type: str
    sha256: str
    size_bytes: int
    created_at: datetime
