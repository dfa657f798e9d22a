"""Executing a job, the service's part: the inputs a job's run reads (rows checked, blobs downloaded and verified)
and what it leaves (artifacts stored, produced models registered, the report and the final status), all of it in
the caller's transaction. The worker (workers/runner.py) claims, heartbeats and runs the engine between the two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from engine.bundle import NoSpace, require_room
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import DatasetInput, JobInputs, ModelInput
from engine.core.kind import ArtifactOut, JobOutput
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.registry import get_kind
from service.artifacts import repository as artifacts_repo
from service.artifacts.tables import Artifact
from service.datasets import repository as datasets_repo
from service.datasets.tables import Dataset
from service.db import new_id
from service.jobs import repository as repo
from service.jobs.tables import Job
from service.model_files import repository as models_repo
from service.model_files import service as model_files
from service.model_files.tables import ModelFile
from service.storage import ObjectStore
from service.storage import service as blobs


@dataclass
class InputRows:
    """The rows a job reads, loaded in one transaction; their blobs are downloaded after it."""

    job: Job
    model: ModelFile
    datasets: dict[str, Dataset]
    others: dict[str, ModelFile]


def load_inputs(db: Session, job_id: str) -> InputRows:
    """The job's model, datasets and the other models its params name; EngineError if one was deleted."""
    job = repo.get_any(db, job_id)
    assert job is not None
    model = models_repo.get(db, tenant_id=job.tenant_id, model_id=job.model_id or "")
    if model is None:
        raise EngineError(ErrorCode.MODEL_MISSING, "the job's model was deleted before the job ran")
    found = datasets_repo.get_many(db, tenant_id=job.tenant_id, ids=list(job.datasets.values()))
    missing = [role for role, i in job.datasets.items() if i not in found]
    if missing:
        raise EngineError(ErrorCode.DATASET_MISSING, f"the job's dataset(s) for {missing} were deleted before it ran")
    kind = get_kind(job.kind)
    others = {}
    for role, other_id in kind.other_models(kind.Params.model_validate(job.params)).items():
        other = models_repo.get(db, tenant_id=job.tenant_id, model_id=other_id)
        if other is None:
            raise EngineError(ErrorCode.MODEL_MISSING, f"the {role} model {other_id} was deleted before the job ran")
        others[role] = other
    return InputRows(job, model, {role: found[i] for role, i in job.datasets.items()}, others)


def download_inputs(store: ObjectStore, rows: InputRows, folder: Path, *, max_threads: int) -> JobInputs:
    """The blobs into `folder` (each verified against its size and sha256) as the engine's JobInputs."""
    needed = sum(model_files.scratch_needed(m) for m in [rows.model, *rows.others.values()])
    needed += sum(ds.size_bytes for ds in rows.datasets.values())
    try:
        require_room(folder, needed, "the job's inputs on the worker's scratch disk")
    except NoSpace as exc:
        raise EngineError(ErrorCode.INPUT_UNAVAILABLE, f"{exc}: free disk space on the worker") from None
    model_path = model_files.download(store, rows.model, folder / "model")
    datasets = {}
    for role, ds in rows.datasets.items():
        path = folder / f"{role}.{ds.format}"
        store.download(ds.blob_key, path, sha256=ds.sha256, size=ds.size_bytes)
        datasets[role] = DatasetInput(
            path=str(path), format=ds.format, label=ds.label, summary=DatasetSummary.model_validate(ds.summary)
        )
    models = {}
    for role, other in rows.others.items():
        path = model_files.download(store, other, folder / f"{role}.model")
        models[role] = ModelInput(path=str(path), info=ModelInfo.model_validate(other.info))
    out_dir = folder / "out"
    out_dir.mkdir()
    return JobInputs(
        models=models,
        model_path=str(model_path),
        model_info=ModelInfo.model_validate(rows.model.info),
        datasets=datasets,
        out_dir=str(out_dir),
        max_threads=max_threads,
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _register_model(
    db: Session, store: ObjectStore, job: Job, art: ArtifactOut, path: Path, sha: str, size: int, key: str
) -> str:
    """A produced model becomes a model of the tenant (source_job_id set), so a chain is another job on it; the same
    bytes (produced twice, or uploaded) are the same model."""
    original = models_repo.get(db, tenant_id=job.tenant_id, model_id=job.model_id or "")
    fields: dict[str, Any] = {
        "db": db,
        "tenant_id": job.tenant_id,
        "name": f"{original.name if original else 'model'}-{art.register_as_model}"[:200],
        "filename": Path(art.filename).name,
        "info": art.model_info or {},
        "source_job_id": job.id,
    }
    if art.media_type == "application/x-tar":  # a bundle (a model with external data), packed by the engine
        row, _ = model_files.register_archive(store=store, path=path, **fields)
    else:
        row, _ = model_files.register(sha256=sha, size=size, blob_key=key, **fields)
    return row.id


def save_outputs(db: Session, store: ObjectStore, *, job: Job, attempt: int, out_dir: Path, output: JobOutput) -> bool:
    """Artifacts, registered models, the report and `succeeded`, in the caller's transaction; False when the job
    is no longer this attempt's (cancelled or taken over): the caller rolls back and nothing is kept."""
    report: dict[str, Any] = dict(output.report)
    report["inputs"] = {"model_id": job.model_id, "datasets": job.datasets}
    for art in output.artifacts:
        path = out_dir / Path(art.filename).name
        sha, size = _sha256(path), path.stat().st_size
        key = blobs.store_file(db=db, store=store, path=path, sha256=sha, size=size)
        artifacts_repo.add(
            db,
            Artifact(
                id=new_id("art"),
                tenant_id=job.tenant_id,
                job_id=job.id,
                role=art.role,
                filename=Path(art.filename).name,
                media_type=art.media_type,
                sha256=sha,
                size_bytes=size,
                blob_key=key,
            ),
        )
        if art.register_as_model:
            report["output_model_id"] = _register_model(db, store, job, art, path, sha, size, key)
    return repo.finish(db, job.id, attempt, status="succeeded", report=report)
