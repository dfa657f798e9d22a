from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from service.content import blob_response
from service.datasets import service
from service.datasets.schemas import DatasetOut
from service.datasets.service import FORMATS
from service.deps import EdgeRoute, SessionDep, SettingsDep, StoreDep, TenantDep
from service.pagination import CursorQuery, LimitQuery, Page
from service.storage import service as blobs
from service.uploads import UPLOAD_RESPONSES, create_from_request, multipart_openapi

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=EdgeRoute)

_FIELDS = {
    "name": "Display name (default: the file name without its extension)",
    "label": "The label array/column (default: one named y or label; none: unlabeled)",
    "kind": "samples (default; .npz/.csv/.parquet) or history (.json Keras History, .csv Lightning CSVLogger)",
    "format": "npz | csv | parquet | json (default: from the file name's extension)",
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    summary="Upload a dataset or a training history",
    description="Streams the file, then reads and summarizes it in a child process with memory and time limits "
    "(NPZ headers are checked before arrays are loaded; object arrays are refused). 201 for a new dataset; 200 "
    "with the existing one when this tenant uploaded the same bytes with the same label before.",
    responses={
        200: {"model": DatasetOut},
        **UPLOAD_RESPONSES,
        422: {"description": "Not a readable dataset"},
    },
    openapi_extra=multipart_openapi(_FIELDS, {"kind": ["samples", "history"], "format": list(FORMATS)}),
)
async def upload_dataset(
    request: Request, tenant: TenantDep, db: SessionDep, store: StoreDep, settings: SettingsDep
) -> JSONResponse:
    return await create_from_request(
        request,
        db=db,
        limit=settings.max_dataset_bytes,
        settings=settings,
        tenant_id=tenant.id,
        allowed_fields=set(_FIELDS),
        create=lambda upload: service.create_from_upload(
            db=db, store=store, settings=settings, tenant_id=tenant.id, upload=upload
        ),
        schema=DatasetOut,
        location="/v1/datasets",
    )


@router.get("", response_model=Page[DatasetOut], summary="List datasets, newest first")
def list_datasets(
    tenant: TenantDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[DatasetOut]:
    rows, next_cursor = service.list_page(db=db, tenant_id=tenant.id, limit=limit, cursor=cursor)
    return Page[DatasetOut](items=[DatasetOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut, summary="Get a dataset and its summary")
def get_dataset(dataset_id: str, tenant: TenantDep, db: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(service.get(db=db, tenant_id=tenant.id, dataset_id=dataset_id))


@router.get(
    "/{dataset_id}/content",
    summary="Download the dataset file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_dataset_content(dataset_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> StreamingResponse:
    row = service.get(db=db, tenant_id=tenant.id, dataset_id=dataset_id)
    return blob_response(
        blobs.read(store=store, row=row),
        size=row.size_bytes,
        sha256=row.sha256,
        filename=row.filename or f"{row.name}.{row.format}",
        media_type="application/octet-stream",
    )


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a dataset")
def delete_dataset(dataset_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> Response:
    service.delete(db=db, store=store, tenant_id=tenant.id, dataset_id=dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
