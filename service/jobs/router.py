from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from engine.registry import render_report
from service.artifacts import service as artifacts
from service.artifacts.schemas import ArtifactOut
from service.deps import EdgeRoute, OptionalCredentialsDep, SessionDep, SettingsDep, StoreDep, TenantDep, authenticated
from service.errors import AppError
from service.jobs import links, service
from service.jobs.schemas import JobCreate, JobOut, KindOut
from service.jobs.tables import STATUSES, Job
from service.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=EdgeRoute)
kinds_router = APIRouter(prefix="/v1/kinds", tags=["jobs"], route_class=EdgeRoute)
log = logging.getLogger("onnxsmith.jobs")


def _out(row: Job, request: Request) -> JobOut:
    """The job resource, with a signed report link when there is a report."""
    url = None
    if row.status == "succeeded":
        settings = request.app.state.settings
        token = links.make_token(request.app.state.link_key, row.id, row.tenant_id, settings.report_link_ttl_s)
        url = f"{request.base_url}v1/jobs/{row.id}/report.html?token={token}"  # (url_for walks every route)
    return JobOut.from_row(row, report_url=url)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Submit a job",
    description="Validates `params` against the kind's schema and the datasets against the model, records the job "
    "as queued and sends its id to a worker. With `Idempotency-Key`, the same key and body return the same job "
    "(and re-send it while it is still queued); the same key with another body is a 409.",
    responses={
        404: {"description": "Unknown model or dataset"},
        409: {"description": "Idempotency key reused"},
        422: {"description": "Invalid kind, params or data"},
        503: {"description": "Broker unavailable"},
    },
)
def submit_job(
    body: JobCreate,
    request: Request,
    tenant: TenantDep,
    db: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    job, created = service.submit(
        db=db, settings=settings, tenant_id=tenant.id, body=body, idempotency_key=idempotency_key
    )
    out = _out(job, request).model_dump(mode="json")
    db.commit()  # the edge: the worker must find the committed row when the message arrives
    if job.status == "queued":
        try:
            request.app.state.enqueuer.send(kind=job.kind, job_id=job.id)
        except Exception as exc:
            log.exception("could not enqueue job %s", job.id)
            raise AppError(
                503,
                "broker-unavailable",
                f"job {job.id} was saved as queued but could not be sent to the workers; retry the "
                "request with the same Idempotency-Key to send it again",
                title="Broker unavailable",
                extra={"job_id": job.id},
            ) from exc
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(out, status_code=status.HTTP_202_ACCEPTED, headers=headers)


@router.get("", response_model=Page[JobOut], summary="List jobs, newest first")
def list_jobs(
    request: Request,
    tenant: TenantDep,
    db: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status_: Annotated[str | None, Query(alias="status", pattern="^(" + "|".join(STATUSES) + ")$")] = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[JobOut]:
    rows, next_cursor = service.list_page(
        db=db, tenant_id=tenant.id, limit=limit, cursor=cursor, status=status_, kind=kind
    )
    return Page[JobOut](items=[_out(r, request) for r in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, summary="Status, progress and stage of a job")
def get_job(job_id: str, request: Request, tenant: TenantDep, db: SessionDep) -> JobOut:
    return _out(service.get(db=db, tenant_id=tenant.id, job_id=job_id), request)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a queued or running job",
    responses={409: {"description": "Already finished"}},
)
def cancel_job(job_id: str, request: Request, tenant: TenantDep, db: SessionDep) -> JobOut:
    return _out(service.cancel(db=db, tenant_id=tenant.id, job_id=job_id), request)


@router.get(
    "/{job_id}/report",
    summary="The report of a succeeded job",
    responses={409: {"description": "The job has no report (yet)"}},
)
def get_report(job_id: str, tenant: TenantDep, db: SessionDep) -> dict[str, Any]:
    return service.report(db=db, tenant_id=tenant.id, job_id=job_id)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut], summary="Files the job produced")
def list_artifacts(job_id: str, tenant: TenantDep, db: SessionDep) -> list[ArtifactOut]:
    service.get(db=db, tenant_id=tenant.id, job_id=job_id)
    return [ArtifactOut.model_validate(a) for a in artifacts.list_for_job(db=db, tenant_id=tenant.id, job_id=job_id)]


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    summary="The report as a page a person can open",
    description="Authenticated with the API key, or with the `token` of the job's signed `report_url` (valid for "
    "`ONNXSMITH_REPORT_LINK_TTL_S`), so the link opens in a browser.",
    responses={401: {"description": "No key and no valid token"}, 409: {"description": "No report yet"}},
)
def get_report_html(
    job_id: str,
    db: SessionDep,
    request: Request,
    creds: OptionalCredentialsDep,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    if token is not None:
        tenant_id = service.tenant_for_report_link(db=db, job_id=job_id, token=token, key=request.app.state.link_key)
    else:
        tenant_id = authenticated(
            db,
            creds,
            request.app.state.key_cache,
            header=request.headers.get("authorization"),
            missing_hint=" or use the job's report_url",
        ).id
    job = service.get(db=db, tenant_id=tenant_id, job_id=job_id)
    report = service.report(db=db, tenant_id=tenant_id, job_id=job_id)
    page = render_report(report, JobOut.from_row(job).model_dump(mode="json"))
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a job and its artifacts",
    responses={409: {"description": "The job is running: cancel it first"}},
)
def delete_job(job_id: str, tenant: TenantDep, db: SessionDep, store: StoreDep) -> Response:
    service.delete(db=db, store=store, tenant_id=tenant.id, job_id=job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@kinds_router.get(
    "",
    response_model=list[KindOut],
    summary="Job kinds",
    description="Every kind with its dataset roles, queue, params JSON schema and whether a live worker can run it.",
)
def list_kinds(tenant: TenantDep, db: SessionDep, settings: SettingsDep) -> list[KindOut]:
    return service.kinds(db=db, settings=settings)
