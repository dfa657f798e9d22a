from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.datasets import DatasetSummary


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    filename: str | None
    kind: str = Field(description="samples | history")
    format: str = Field(description="npz | csv | parquet | json")
    label: str | None = Field(description="The label array/column; null for unlabeled data and histories")
    sha256: str
    size_bytes: int
    created_at: datetime
    summary: DatasetSummary
