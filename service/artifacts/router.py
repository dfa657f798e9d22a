from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service.artifacts import service
from service.artifacts.schemas import ArtifactOut
from service.content import blob_response
from service.deps import EdgeRoute, SessionDep, StoreDep, TenantDep
from service.storage import service as blobs

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"], route_class=EdgeRoute)


@router.get("/{artifact_id}", response_model=ArtifactOut, summary="Get an artifact's metadata")
def get_artifact(artifact_id: str, tenant: TenantDep, db: SessionDep) -> ArtifactOut:
    return ArtifactOut.model_validate(service.get(db=db, tenant_id=tenant.id, artifact_id=artifact_id))


@router.get(
    "/{artifact_id}/content",
    summary="Download an artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}, "application/x-npz": {}}}},  # models; npz arrays
)
def get_artifact_content(artifact_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> StreamingResponse:
    row = service.get(db=db, tenant_id=tenant.id, artifact_id=artifact_id)
    return blob_response(
        blobs.read(store=store, row=row),
        size=row.size_bytes,
        sha256=row.sha256,
        filename=row.filename,
        media_type=row.media_type,
    )
