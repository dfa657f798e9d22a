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
        default=None,
        description="How a model with external data was uploaded, and so how its content downloads: 'tar' or 'zip' "
        "(an archive; a job's output is a tar), 'files' (the .onnx file and `data` parts; downloads as a tar, each "
        "file also on its own at /v1/models/{id}/files/{name})",
    )
    parts: list[PartOut] = Field(default_factory=list, description="A bundle's files, the .onnx file first")
    source_job_id: str | None = Field(description="The job that produced this model; null for uploads")
    created_at: datetime
    info: ModelInfo
