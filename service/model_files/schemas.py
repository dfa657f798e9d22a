from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.inspect import ModelInfo


class PartOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="The file's path inside the bundle")
    sha256: str
    size_bytes: int


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str | None = Field(description="The uploaded file's name, as the client sent it (display only)")
    sha256: str = Field(description="The file's sha256; for a bundle, the digest of its manifest (engine.bundle)")
    size_bytes: int = Field(description="Bytes of the file, or of all the bundle's files")
    bundle_format: str | None = Field(
        default=None, description="'tar' or 'zip' for a model uploaded as an archive with its external data"
    )
    parts: list[PartOut] = Field(default_factory=list, description="A bundle's files, the .onnx file first")
    source_job_id: str | None = Field(description="The job that produced this model; null for uploads")
    created_at: datetime
    info: ModelInfo
