from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from engine.bundle import archive_kind
from service.content import blob_response
from service.deps import EdgeRoute, SessionDep, SettingsDep, StoreDep, TenantDep
from service.errors import not_found
from service.model_files import service
from service.model_files.schemas import ModelOut
from service.pagination import CursorQuery, LimitQuery, Page
from service.storage import service as blobs
from service.uploads import UPLOAD_RESPONSES, create_from_request, multipart_openapi

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=EdgeRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelOut,
    summary="Upload an ONNX model (one .onnx file; a model with external data as a .zip/.tar archive, or as its "
    ".onnx file and named data parts)",
    description="Streams the file to a temp file while hashing it, checks it in a child process with memory "
    "and time limits (onnx.checker, ONNX Runtime session), then stores it. A model with external data (over "
    "protobuf's 2 GB limit) comes as one archive holding its .onnx file and data files, or as its .onnx file (`file`) "
    "with one `data` part per data file, named by its location: every member is checked "
    "while it is unpacked (no links, absolute paths, '..', duplicates; sizes and member count bounded), every "
    "tensor's location must resolve inside the archive, and the weights are not loaded to inspect it. "
    "201 for a new model; 200 with the existing model when this tenant uploaded the same bytes (or, for an "
    "archive, the same files) before.",
    responses={
        200: {"model": ModelOut, "description": "Same bytes uploaded before: the existing model"},
        **UPLOAD_RESPONSES,
        422: {"description": "Not a valid model"},
    },
    openapi_extra=multipart_openapi(
        {"name": "Display name (default: the file name without .onnx)"},
        data_parts="The model's external data files, with the .onnx file as `file` (instead of an archive): each "
        "part's filename is the location the model names it by (e.g. model.onnx.data, or weights/all.bin)",
    ),
)
async def upload_model(
    request: Request, tenant: TenantDep, db: SessionDep, store: StoreDep, settings: SettingsDep
) -> JSONResponse:
    return await create_from_request(
        request,
        db=db,
        limit=max(settings.max_model_bytes, settings.max_bundle_bytes),
        limit_for=lambda head: settings.max_bundle_bytes if archive_kind(head) else settings.max_model_bytes,
        settings=settings,
        tenant_id=tenant.id,
        allowed_fields={"name"},
        create=lambda upload: service.create_from_upload(
            db=db, store=store, settings=settings, tenant_id=tenant.id, upload=upload
        ),
        schema=ModelOut,
        location="/v1/models",
        data_parts=True,
    )


@router.get("", response_model=Page[ModelOut], summary="List models, newest first")
def list_models(
    tenant: TenantDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[ModelOut]:
    rows, next_cursor = service.list_page(db=db, tenant_id=tenant.id, limit=limit, cursor=cursor)
    return Page[ModelOut](items=[ModelOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut, summary="Get a model and its inspection")
def get_model(model_id: str, tenant: TenantDep, db: SessionDep) -> ModelOut:
    return ModelOut.model_validate(service.get(db=db, tenant_id=tenant.id, model_id=model_id))


@router.get(
    "/{model_id}/content",
    summary="Download the model file (a bundle as an archive of its files, .zip or .tar as it was uploaded)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}, "application/x-tar": {}, "application/zip": {}}}},
)
def get_model_content(model_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> StreamingResponse:
    row = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    if row.parts:
        chunks, length, fmt = service.archive_stream(store, row)
        return blob_response(
            chunks,
            size=length,
            sha256=row.sha256,
            filename=f"{row.name}.{fmt}",
            media_type=service.ARCHIVE_MEDIA_TYPES[fmt],
        )
    return blob_response(
        blobs.read(store=store, row=row),
        size=row.size_bytes,
        sha256=row.sha256,
        filename=f"{row.name}.onnx",
        media_type="application/octet-stream",
    )


@router.get(
    "/{model_id}/files/{name:path}",
    summary="Download one file of a bundle (its .onnx file or a data file) by its name in the bundle",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "No such model or file"}},
)
def get_model_file(model_id: str, name: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> StreamingResponse:
    row = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    part = next((p for p in row.parts if p.name == name), None)
    if part is None:
        raise not_found("file", name)
    return blob_response(
        store.iter_chunks(part.blob_key, sha256=part.sha256, size=part.size_bytes),
        size=part.size_bytes,
        sha256=part.sha256,
        filename=name.rsplit("/", 1)[-1],
        media_type="application/octet-stream",
    )


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a model")
def delete_model(model_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> Response:
    service.delete(db=db, store=store, tenant_id=tenant.id, model_id=model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
