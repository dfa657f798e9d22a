from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.registry import kind_names

ROLES = ("train", "validation", "test", "calibration", "eval", "history")


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # Swagger UI pre-fills the body with this: a real request, not "string"s
            "examples": [
                {
                    "kind": "evaluate",
                    "model_id": "mdl_... (from POST /v1/models)",
                    "datasets": {"eval": "dst_... (from POST /v1/datasets)"},
                    "params": {},
                }
            ]
        },
    )

    kind: str = Field(
        description="Job kind (GET /v1/kinds lists them with their params)",
        max_length=40,
        json_schema_extra={"enum": list(kind_names())},
    )
    model_id: str = Field(max_length=40)
    datasets: dict[str, str] = Field(
        default_factory=dict,
        description=f"Dataset ids by role ({', '.join(ROLES)}). Where a kind needs eval and none is given, it "
        "uses test, else validation.",
        json_schema_extra={  # the roles, and nothing else (another key is a 422)
            "properties": {role: {"type": "string", "maxLength": 40} for role in ROLES},
            "additionalProperties": False,
        },
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters (see its schema)")


class JobErrorOut(BaseModel):
    code: str
    detail: str


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    progress: float = Field(description="0..1")
    stage: str
    model_id: str | None
    datasets: dict[str, str] = Field(description="Dataset ids by role, after defaulting")
    params: dict[str, Any] = Field(description="The parameters with their defaults filled in")
    error: JobErrorOut | None = None
    attempts: int = Field(description="Deliveries that started running this job")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report_url: str | None = Field(
        default=None,
        description="The HTML report, openable without an API key for a short time (succeeded jobs only)",
    )

    @classmethod
    def from_row(cls, row: Any, report_url: str | None = None) -> JobOut:
        out = cls.model_validate(row)
        if row.error_code:
            out.error = JobErrorOut(code=row.error_code, detail=row.error_detail or "")
        out.report_url = report_url if row.status == "succeeded" else None
        return out


class WorkerOut(BaseModel):
    name: str
    capabilities: list[str]
    cpu_model: str | None = None
    int8_isa: str | None = Field(default=None, description="AMX, AVX-512 VNNI, AVX-VNNI, AVX-512, AVX2, ...")
    fp16_native: bool | None = None
    cpu_flags: list[str] = Field(default_factory=list)


class KindOut(BaseModel):
    """A job kind: what it reads, where it runs, its params' JSON schema and whether a live worker can run it."""

    name: str
    description: str
    queue: str = Field(description="default | measure (speed measurements, concurrency 1)")
    dataset_roles: list[str] = Field(description="Roles it reads (eval falls back to test, then validation)")
    required_roles: list[str]
    needs: list[str] = Field(description="Optional worker capabilities it cannot run without, e.g. torch")
    runnable: Literal["all", "some", "none", "unknown"] = Field(
        description="Which live workers on its queue have what it needs: all, some (a job may land on one that "
        "cannot and fail with missing_dependency), none (submit refuses it), unknown (no live worker)"
    )
    live_workers: int = Field(description="Workers on its queue seen within the presence TTL")
    workers: list[WorkerOut] = Field(
        default_factory=list,
        description="The live workers on its queue and the CPU each measures on (int8 speed depends on int8_isa: "
        "the same quantize request may rightly pick differently on another worker)",
    )
    params_schema: dict[str, Any]
