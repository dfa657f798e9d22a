from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.inspect import ModelInfo


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str | None = Field(description="The uploaded file's name, as the client sent it (display only)")
    sha256: str
    size_bytes: int
    source_job_id: str | None = Field(description="The job that produced this model; null for uploads")
    created_at: datetime
    info: ModelInfo
