"""Jobs: validate a request against its kind and inputs, record it, and the rules of cancel and report."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from engine.bundle import fits_whole, whole_limit_text
from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import AnyKind
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.registry import get_kind, kind_names, roles_for
from service.artifacts import repository as artifacts_repo
from service.datasets import repository as datasets_repo
from service.db import insert_once, new_id, utcnow
from service.deps import unauthorized
from service.errors import AppError, not_found, problem_for
from service.fleet import service as fleet
from service.jobs import links
from service.jobs import repository as repo
from service.jobs.schemas import ROLES, JobCreate, KindOut
from service.jobs.tables import Job
from service.model_files import repository as models_repo
from service.pagination import split_page
from service.settings import Settings
from service.storage import ObjectStore
from service.storage import service as blobs


def _request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _params_error(exc: ValidationError, kind: AnyKind) -> AppError:
    accepted = ", ".join(kind.Params.model_fields)

    def message(e: Any) -> str:
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            return f"not a parameter of {kind.name}; its parameters: {accepted}"
        return str(e["msg"])

    errors = [
        {
            "location": "body",
            "field": ".".join(["params", *map(str, e["loc"])]),
            "message": message(e),
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return AppError(422, "validation-error", detail, title="Invalid request", errors=errors)


def submit(
    *, db: Session, settings: Settings, tenant_id: str, body: JobCreate, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Validate and record a job (status queued). Returns (job, created); created is False for a replay."""
    request_hash = _request_hash(body)
    if idempotency_key is not None:
        existing = repo.get_by_idempotency_key(db, tenant_id=tenant_id, key=idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash), False
    kind, params = _checked_params(body, settings)
    model, roles = _checked_inputs(db=db, settings=settings, tenant_id=tenant_id, body=body, kind=kind, params=params)
    fleet.check_capable(
        db=db, kind=kind.name, queue=kind.queue, needs=kind.needs(params), ttl_s=settings.presence_ttl_s
    )
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=kind.name,
        status="queued",
        progress=0.0,
        stage="queued",
        model_id=model.id,
        datasets=roles,
        params=params.model_dump(mode="json"),
        attempts=0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        enqueued_at=utcnow(),
    )
    # the same Idempotency-Key sent concurrently: the first one's job is the answer
    key = idempotency_key
    row, created = insert_once(
        db, job, lambda: repo.get_by_idempotency_key(db, tenant_id=tenant_id, key=key) if key else None
    )
    return (row, True) if created else (_replay(row, request_hash), False)


def _replay(existing: Job, request_hash: str) -> Job:
    """The job an Idempotency-Key already made, if the body is the same; 409 if it is not."""
    if existing.request_hash != request_hash:
        raise AppError(
            409,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request body",
            title="Idempotency key reused",
            extra={"job_id": existing.id},
        )
    return existing


def _invalid(detail: str) -> AppError:
    return AppError(422, "validation-error", detail, title="Invalid request")


def _checked_params(body: JobCreate, settings: Settings) -> tuple[AnyKind, Any]:
    """The kind and its params, checked against this deployment's limits (threads, time budget) and roles."""
    try:
        kind = get_kind(body.kind)
    except KeyError:
        raise AppError(
            422,
            "unknown-job-kind",
            f"unknown job kind {body.kind!r}; kinds: {', '.join(kind_names())}",
            title="Unknown job kind",
            errors=[{"location": "body", "field": "kind", "message": "unknown kind", "type": "enum"}],
        ) from None
    try:
        params = kind.Params.model_validate(body.params)
    except ValidationError as exc:
        raise _params_error(exc, kind) from None
    threads = kind.threads(params)
    if threads > settings.job_threads:
        raise _invalid(
            f"params ask for {threads} threads; workers allow at most {settings.job_threads} (ONNXSMITH_JOB_THREADS)"
        )
    budget = kind.budget_seconds(params)
    if budget is not None and "max_seconds" not in params.model_fields_set and budget >= settings.job_time_limit_s:
        # a default budget above this deployment's job limit: shrink it, leaving time to measure the choice
        params = kind.with_budget(params, 0.8 * settings.job_time_limit_s)
    elif budget is not None and budget >= settings.job_time_limit_s:
        raise _invalid(
            f"params.max_seconds ({budget:g}) must be below the job time limit ({settings.job_time_limit_s:g} s, "
            "ONNXSMITH_JOB_TIME_LIMIT_S): the search needs time to measure its choice after it"
        )
    bad_roles = sorted(set(body.datasets) - set(ROLES))
    if bad_roles:
        raise _invalid(f"unknown dataset role(s) {bad_roles}; roles: {', '.join(ROLES)}")
    return kind, params


def _refuse_external_data(kind: AnyKind, infos: dict[str, ModelInfo]) -> None:
    """A bundle (weights in external files) runs on the kinds that read it where it lies; the others load it whole,
    as one model file, so they refuse at submit a bundle over protobuf's limit, naming it."""
    for what, info in infos.items():
        if info.external_data_bytes and not kind.external_data and not fits_whole(info):
            able = ", ".join(n for n in kind_names() if get_kind(n).external_data)
            raise problem_for(
                EngineError(
                    ErrorCode.UNSUPPORTED,
                    f"{kind.name} holds the whole model in memory, up to {whole_limit_text()}; {what} has "
                    f"{info.initializer_bytes:,} bytes of weights ({info.external_data_bytes:,} in external files): "
                    f"these kinds run on it: {able}",
                )
            )


def _checked_inputs(
    *, db: Session, settings: Settings, tenant_id: str, body: JobCreate, kind: AnyKind, params: Any
) -> tuple[Any, dict[str, str]]:
    """The model (404 if unknown) and the datasets by resolved role, checked by the kind (its 4xx problems)."""
    model = models_repo.get(db, tenant_id=tenant_id, model_id=body.model_id)
    if model is None:
        raise not_found("model", body.model_id)
    others = {}
    for role, other_id in kind.other_models(params).items():
        other = models_repo.get(db, tenant_id=tenant_id, model_id=other_id)
        if other is None:
            raise not_found("model", other_id)
        others[role] = ModelInfo.model_validate(other.info)
    _refuse_external_data(
        kind, {"the model": ModelInfo.model_validate(model.info)} | {f"the {r} model": i for r, i in others.items()}
    )
    found = datasets_repo.get_many(db, tenant_id=tenant_id, ids=list(set(body.datasets.values())))
    for dataset_id in body.datasets.values():
        if dataset_id not in found:
            raise not_found("dataset", dataset_id)
    try:
        roles = roles_for(kind, body.datasets)
        summaries = {role: DatasetSummary.model_validate(found[i].summary) for role, i in roles.items()}
        info = ModelInfo.model_validate(model.info)
        kind.validate(info, summaries, params)
        if others:
            kind.validate_models(info, others, params)
        estimate = kind.estimate_seconds(info, summaries, params)
        if estimate is not None and estimate > settings.job_time_limit_s:
            raise EngineError(
                ErrorCode.TOO_LONG,
                f"this job would run about {estimate:,.0f} s at least (an optimistic estimate from the model's MACs, "
                f"the samples and the params), more than the job time limit of {settings.job_time_limit_s:g} s "
                "(ONNXSMITH_JOB_TIME_LIMIT_S): ask for fewer epochs or samples",
            )
    except EngineError as exc:
        raise problem_for(exc) from None
    return model, roles


def kinds(*, db: Session, settings: Settings) -> list[KindOut]:
    out = []
    for name in kind_names():
        kind = get_kind(name)
        needs = kind.needs(kind.Params.model_construct())
        runnable, _, live = fleet.capable(db=db, queue=kind.queue, needs=needs, ttl_s=settings.presence_ttl_s)
        out.append(
            KindOut(
                name=name,
                description=kind.description,
                queue=kind.queue,
                dataset_roles=list(kind.roles),
                required_roles=list(kind.required),
                needs=sorted(needs),
                runnable=runnable,
                live_workers=live,
                workers=fleet.live_workers(db=db, queue=kind.queue, ttl_s=settings.presence_ttl_s),
                params_schema=kind.Params.model_json_schema(),
            )
        )
    return out


def get(*, db: Session, tenant_id: str, job_id: str) -> Job:
    row = repo.get(db, tenant_id=tenant_id, job_id=job_id)
    if row is None:
        raise not_found("job", job_id)
    return row


def list_page(
    *, db: Session, tenant_id: str, limit: int, cursor: str | None, status: str | None, kind: str | None
) -> tuple[list[Job], str | None]:
    rows = repo.list_page(db, tenant_id=tenant_id, limit=limit + 1, cursor=cursor, status=status, kind=kind)
    return split_page(rows, limit)


def cancel(*, db: Session, tenant_id: str, job_id: str) -> Job:
    job = get(db=db, tenant_id=tenant_id, job_id=job_id)
    if not repo.cancel(db, tenant_id=tenant_id, job_id=job_id) and job.status in ("succeeded", "failed"):
        raise AppError(
            409,
            "job-finished",
            f"job {job_id} already {job.status}; it cannot be cancelled",
            title="Job already finished",
            extra={"job_status": job.status},
        )
    db.refresh(job)
    return job


def report(*, db: Session, tenant_id: str, job_id: str) -> dict[str, Any]:
    job = get(db=db, tenant_id=tenant_id, job_id=job_id)
    if job.status != "succeeded" or job.report is None:
        detail = f"job {job_id} is {job.status}"
        if job.error_code:
            detail += f" ({job.error_code}: {job.error_detail})"
        raise AppError(
            409,
            "no-report",
            detail + "; a report exists once it has succeeded",
            title="No report",
            extra={"job_status": job.status},
        )
    return job.report


def tenant_for_report_link(*, db: Session, job_id: str, token: str, key: bytes) -> str:
    """The tenant whose job a signed report link opens, or a 401."""
    job = repo.get_any(db, job_id)
    if job is None or not links.check_token(key, job_id, job.tenant_id, token):
        raise unauthorized("the report link is invalid or has expired; get a fresh report_url from the job")
    return job.tenant_id


def delete(*, db: Session, store: ObjectStore, tenant_id: str, job_id: str) -> None:
    job = get(db=db, tenant_id=tenant_id, job_id=job_id)
    if job.status == "running":
        raise AppError(409, "job-running", f"job {job_id} is running; cancel it first", title="Job running")
    keys = artifacts_repo.delete_for_job(db, job_id=job_id)
    repo.delete(db, job)
    for key in sorted(set(keys)):
        blobs.release(db=db, store=store, key=key)
