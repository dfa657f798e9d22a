"""Resumable uploads: POST /v1/uploads, PUT .../parts/{n}, GET, POST .../complete (the model), DELETE."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.deps import EdgeRoute, SessionDep, SettingsDep, StoreDep, TenantDep
from service.errors import AppError
from service.model_files import service as model_files
from service.model_files.schemas import ModelOut
from service.settings import Settings
from service.upload_sessions import service
from service.uploads import UPLOAD_RESPONSES, Pace, Upload, checked_create, created_response, paced

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=EdgeRoute)


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # the filename pattern has a lookahead

    size: int = Field(ge=1, description="The file's size in bytes")
    filename: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^(?!\.\.?$)[^\x00-\x1f\x7f-\x9f/\\]+$",
        description="The file's name (display only): no folders, control characters, '.' or '..'",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*\S[^\x00-\x1f\x7f-\x9f]*$",
        description="The model's display name (default: the file name without its extension)",
    )


class UploadOut(BaseModel):
    id: str
    size: int
    part_size: int = Field(description="Every part has this many bytes, the last one the rest")
    parts: int
    received: list[int] = Field(description="The parts that arrived whole")
    expires_at: datetime = Field(description="Removed with its parts if untouched until then")


def _out(settings: Settings, s: service.Session) -> UploadOut:
    return UploadOut(
        id=s.id,
        size=s.size,
        part_size=s.part_size,
        parts=s.parts,
        received=service.received(settings, s),
        expires_at=datetime.fromtimestamp(service.touched(settings, s) + settings.upload_session_ttl_s, UTC),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadOut,
    summary="Start a resumable model upload (for large files: parts sent separately, re-sendable)",
    responses={
        413: {"description": "Over the size limit"},
        429: {"description": "This key already has max_uploads_per_tenant resumable uploads open (Retry-After)"},
        507: {"description": "No disk room"},
    },
)
def create_upload(body: UploadCreate, tenant: TenantDep, settings: SettingsDep) -> UploadOut:
    s = service.create(settings=settings, tenant_id=tenant.id, size=body.size, filename=body.filename, name=body.name)
    return _out(settings, s)


@router.get("/{upload_id}", response_model=UploadOut, summary="A resumable upload: which parts arrived")
def get_upload(upload_id: str, tenant: TenantDep, settings: SettingsDep) -> UploadOut:
    return _out(settings, service.get(settings=settings, tenant_id=tenant.id, session_id=upload_id))


@router.put(
    "/{upload_id}/parts/{part}",
    response_model=UploadOut,
    summary="Send one part (raw bytes; exactly part_size, the last one the rest); sending it again replaces it",
    responses={k: v for k, v in UPLOAD_RESPONSES.items() if k in (408,)},
)
async def put_part(upload_id: str, part: int, request: Request, tenant: TenantDep, settings: SettingsDep) -> UploadOut:
    s = service.get(settings=settings, tenant_id=tenant.id, session_id=upload_id)
    await service.write_part(settings, s, part, paced(request.stream(), Pace.of(settings)))
    return _out(settings, s)


@router.post(
    "/{upload_id}/complete",
    response_model=ModelOut,
    status_code=status.HTTP_201_CREATED,
    summary="Finish: check and store the model exactly as POST /v1/models does (201, or 200 for known bytes)",
    responses={200: {"model": ModelOut}, 409: {"description": "Parts missing"}, 422: {"description": "Invalid"}},
)
async def complete_upload(
    upload_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep, settings: SettingsDep
) -> JSONResponse:
    s = service.get(settings=settings, tenant_id=tenant.id, session_id=upload_id)
    upload = await run_in_threadpool(service.assembled, settings, s)

    def create(u: Upload) -> tuple[Any, bool]:
        return model_files.create_from_upload(db=db, store=store, settings=settings, tenant_id=tenant.id, upload=u)

    try:  # a 503 (busy) keeps the session for another `complete`; stored, or refused (4xx), nothing is kept
        row, created = await checked_create(db, settings, create, upload)
    except AppError as exc:
        if exc.status < 500:
            service.remove(settings, s.id)
        raise
    service.remove(settings, s.id)
    return created_response(row, created, ModelOut, "/v1/models")


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Abandon a resumable upload")
def delete_upload(upload_id: str, tenant: TenantDep, settings: SettingsDep) -> Response:
    service.get(settings=settings, tenant_id=tenant.id, session_id=upload_id)
    service.remove(settings, upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
