"""Running one delivery of a job: claim -> fetch inputs -> engine in the sandbox -> store outputs -> finish.

Every state change is a conditional UPDATE keyed on the attempt number (service/jobs/repository.py), so a
message delivered twice, late, or to two workers runs the job once, and a result from an attempt that lost
its lease (or a cancelled job) is dropped instead of overwriting anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import DatasetInput, JobInputs, ModelInput
from engine.core.kind import JobOutput
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.registry import get_kind
from engine.sandbox import Limits, run_isolated
from service.artifacts import repository as artifacts_repo
from service.artifacts.tables import Artifact
from service.datasets import repository as datasets_repo
from service.db import make_engine, make_session_factory, new_id
from service.jobs import repository as repo
from service.jobs.tables import FINAL
from service.model_files import repository as models_repo
from service.model_files.tables import ModelFile
from service.settings import Settings, get_settings
from service.storage import BlobCorrupt, BlobMissing, ObjectStore, StoreError, open_store
from service.storage import service as blobs
from service.tables import Base  # noqa: F401 - every table mapped, so foreign keys resolve

log = logging.getLogger("onnxsmith.worker")
TRANSIENT = (OperationalError, StoreError)


@dataclass
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore


_context: Context | None = None
_context_pid: int | None = None
_context_lock = threading.Lock()


def context() -> Context:
    """One per worker process, shared by its pool threads (built after any fork)."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            settings = get_settings()
            engine = make_engine(settings.resolved_database_url)
            _context = Context(settings, make_session_factory(engine), open_store(settings))
            _context_pid = os.getpid()
        return _context


@contextmanager
def transaction(ctx: Context) -> Iterator[Session]:
    with ctx.sessions() as db, db.begin():
        yield db


class Heartbeat:
    """The sandbox monitor: records progress and liveness; says stop when the job was cancelled or taken over."""

    def __init__(self, ctx: Context, job_id: str, attempt: int) -> None:
        self.ctx, self.job_id, self.attempt = ctx, job_id, attempt
        self.interval = min(1.0, ctx.settings.job_lease_s / 3)
        self.last_write = 0.0
        self.progress: float | None = None
        self.stage: str | None = None
        self.dirty = False

    def __call__(self, message: dict[str, Any] | None) -> bool:
        if message:
            self.progress, self.stage, self.dirty = message.get("progress"), message.get("stage"), True
        now = time.monotonic()
        due = now - self.last_write >= self.interval
        if not due and not (self.dirty and now - self.last_write >= 0.25):
            return True
        try:
            with transaction(self.ctx) as db:
                alive = repo.heartbeat(db, self.job_id, self.attempt, progress=self.progress, stage=self.stage)
        except (OperationalError, DBAPIError):
            log.warning("job %s: heartbeat failed, will try again", self.job_id, exc_info=True)
            return True
        self.last_write, self.dirty = now, False
        if not alive:
            log.info("job %s: cancelled or taken over, stopping attempt %d", self.job_id, self.attempt)
        return alive


def execute(job_id: str, *, kind: str, task: Any) -> None:
    ctx = context()
    s = ctx.settings
    lease = timedelta(seconds=s.job_lease_s)
    with transaction(ctx) as db:
        attempt = repo.claim(db, job_id, lease=lease, max_attempts=s.job_max_attempts)
    if attempt is None:
        _not_claimed(ctx, job_id, lease, task)
        return
    log.info("job %s (%s): attempt %d started", job_id, kind, attempt)
    try:
        _run(ctx, job_id, attempt, kind)
    except EngineError as exc:
        if exc.code == ErrorCode.CANCELLED:
            return
        log.info("job %s failed: %s: %s", job_id, exc.code, exc.detail)
        _finish_failed(ctx, job_id, attempt, exc.code.value, exc.detail)
    except (BlobMissing, BlobCorrupt) as exc:
        log.error("job %s: input file problem: %s", job_id, exc)
        _finish_failed(ctx, job_id, attempt, ErrorCode.INPUT_UNAVAILABLE.value, str(exc))
    except TRANSIENT as exc:
        log.warning("job %s: transient error, retrying: %s", job_id, exc)
        with transaction(ctx) as db:
            repo.requeue(db, job_id, attempt, stage="waiting to retry after a transient error")
        raise task.retry(countdown=min(60, 2**attempt), exc=exc) from exc
    except Exception:
        log.exception("job %s (%s) failed with an internal error", job_id, kind)
        _finish_failed(
            ctx,
            job_id,
            attempt,
            ErrorCode.INTERNAL.value,
            f"an internal error occurred; it was logged with job id {job_id}",
        )


def worker_lost_detail(attempts: int, max_attempts: int) -> str:
    return (
        f"the job's worker was lost {attempts} time(s) (ONNXSMITH_JOB_MAX_ATTEMPTS={max_attempts}); "
        "the model or data may crash or exhaust the worker"
    )


def _not_claimed(ctx: Context, job_id: str, lease: timedelta, task: Any) -> None:
    s = ctx.settings
    with transaction(ctx) as db:
        job = repo.get_any(db, job_id)
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return
        if job.status in FINAL:
            log.info("job %s is already %s; redelivered message is a no-op", job_id, job.status)
            return
        detail = worker_lost_detail(job.attempts, s.job_max_attempts)
        if repo.give_up(db, job_id, lease=lease, max_attempts=s.job_max_attempts, detail=detail):
            log.error("job %s failed: worker_lost after %d attempts", job_id, job.attempts)
            return
    # Running under a live lease elsewhere: look again once that lease could have expired.
    log.info("job %s is running elsewhere; checking again in %.0f s", job_id, s.job_lease_s)
    raise task.retry(countdown=s.job_lease_s)


def _finish_failed(ctx: Context, job_id: str, attempt: int, code: str, detail: str) -> None:
    with transaction(ctx) as db:
        if not repo.finish(db, job_id, attempt, status="failed", error_code=code, error_detail=detail):
            log.info("job %s: failure of attempt %d dropped (cancelled or taken over)", job_id, attempt)


def _fetch_inputs(ctx: Context, job_id: str, tmp: Path) -> tuple[Any, dict[str, Any]]:
    with transaction(ctx) as db:
        job = repo.get_any(db, job_id)
        assert job is not None
        model = models_repo.get(db, tenant_id=job.tenant_id, model_id=job.model_id or "")
        if model is None:
            raise EngineError(ErrorCode.MODEL_MISSING, "the job's model was deleted before the job ran")
        found = datasets_repo.get_many(db, tenant_id=job.tenant_id, ids=list(job.datasets.values()))
        missing = [role for role, i in job.datasets.items() if i not in found]
        if missing:
            raise EngineError(
                ErrorCode.DATASET_MISSING, f"the job's dataset(s) for {missing} were deleted before it ran"
            )
        kind = get_kind(job.kind)
        others = {}
        for role, other_id in kind.other_models(kind.Params.model_validate(job.params)).items():
            other = models_repo.get(db, tenant_id=job.tenant_id, model_id=other_id)
            if other is None:
                raise EngineError(
                    ErrorCode.MODEL_MISSING, f"the {role} model {other_id} was deleted before the job ran"
                )
            others[role] = other
        rows = {"job": job, "model": model, "datasets": {role: found[i] for role, i in job.datasets.items()}}
    model_path = tmp / "model.onnx"
    ctx.store.download(rows["model"].blob_key, model_path, sha256=rows["model"].sha256, size=rows["model"].size_bytes)
    datasets = {}
    for role, ds in rows["datasets"].items():
        path = tmp / f"{role}.{ds.format}"
        ctx.store.download(ds.blob_key, path, sha256=ds.sha256, size=ds.size_bytes)
        datasets[role] = DatasetInput(
            path=str(path), format=ds.format, label=ds.label, summary=DatasetSummary.model_validate(ds.summary)
        )
    models = {}
    for role, other in others.items():
        path = tmp / f"{role}.model.onnx"
        ctx.store.download(other.blob_key, path, sha256=other.sha256, size=other.size_bytes)
        models[role] = ModelInput(path=str(path), info=ModelInfo.model_validate(other.info))
    out_dir = tmp / "out"
    out_dir.mkdir()
    inputs = JobInputs(
        models=models,
        model_path=str(model_path),
        model_info=ModelInfo.model_validate(rows["model"].info),
        datasets=datasets,
        out_dir=str(out_dir),
        max_threads=ctx.settings.job_threads,
    )
    return rows["job"], inputs.model_dump(mode="json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run(ctx: Context, job_id: str, attempt: int, kind_name: str) -> None:
    s = ctx.settings
    s.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=s.tmp_dir, prefix=f"{job_id}-") as tmp_name:
        tmp = Path(tmp_name)
        heartbeat = Heartbeat(ctx, job_id, attempt)
        t0 = time.perf_counter()
        heartbeat({"progress": 0.0, "stage": "fetching inputs"})
        job, inputs = _fetch_inputs(ctx, job_id, tmp)
        t_fetched = time.perf_counter()
        threads = s.job_threads  # the most a job may use; the kind's params choose within it
        limits = Limits(memory_mb=s.job_memory_mb, timeout_s=s.job_time_limit_s, threads=threads)
        result = run_isolated(
            "engine.registry:run_in_child",
            {"kind": kind_name, "inputs": inputs, "params": job.params},
            limits,
            monitor=heartbeat,
            poll_s=heartbeat.interval,
            warm=True,  # forked from a preloaded forkserver: milliseconds instead of an interpreter start
        )
        t_ran = time.perf_counter()
        output = JobOutput.model_validate(result.value)
        report = dict(output.report)
        report["inputs"] = {"model_id": job.model_id, "datasets": job.datasets}
        try:
            _save_outputs(ctx, job, job_id, attempt, Path(inputs["out_dir"]), output, report)
        except _ResultDropped:
            log.info("job %s: result of attempt %d dropped (cancelled or taken over)", job_id, attempt)
            return
    log.info(
        "job %s succeeded in attempt %d (fetch %.3f s, engine %.3f s, save %.3f s)",
        job_id,
        attempt,
        t_fetched - t0,
        t_ran - t_fetched,
        time.perf_counter() - t_ran,
    )


class _ResultDropped(Exception):
    pass


def _register_model(db: Session, job: Any, job_id: str, art: Any, sha: str, size: int, key: str) -> str:
    """A produced model becomes a model of the tenant (source_job_id set), so a chain is another job on it."""
    existing = models_repo.get_by_sha256(db, tenant_id=job.tenant_id, sha256=sha)
    if existing is not None:
        return existing.id
    original = models_repo.get(db, tenant_id=job.tenant_id, model_id=job.model_id or "")
    name = f"{original.name if original else 'model'}-{art.register_as_model}"[:200]
    row = ModelFile(
        id=new_id("mdl"),
        tenant_id=job.tenant_id,
        name=name,
        filename=Path(art.filename).name,
        sha256=sha,
        size_bytes=size,
        blob_key=key,
        info=art.model_info or {},
        source_job_id=job_id,
    )
    models_repo.add(db, row)
    return row.id


def _save_outputs(
    ctx: Context, job: Any, job_id: str, attempt: int, out_dir: Path, output: JobOutput, report: dict[str, Any]
) -> None:
    """Artifacts and the final status in one transaction: all of it, or none if the job is no longer ours."""
    with transaction(ctx) as db:
        for art in output.artifacts:
            path = out_dir / Path(art.filename).name
            sha, size = _sha256(path), path.stat().st_size
            key = blobs.store_file(db=db, store=ctx.store, path=path, sha256=sha, size=size)
            artifacts_repo.add(
                db,
                Artifact(
                    id=new_id("art"),
                    tenant_id=job.tenant_id,
                    job_id=job_id,
                    role=art.role,
                    filename=Path(art.filename).name,
                    media_type=art.media_type,
                    sha256=sha,
                    size_bytes=size,
                    blob_key=key,
                ),
            )
            if art.register_as_model:
                report["output_model_id"] = _register_model(db, job, job_id, art, sha, size, key)
        if not repo.finish(db, job_id, attempt, status="succeeded", report=report):
            raise _ResultDropped
