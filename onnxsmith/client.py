"""The onnxsmith Python SDK: `Client` and `AsyncClient` for the REST API (needs only httpx and pydantic).

    from onnxsmith import Client
    with Client("http://127.0.0.1:8000", api_key) as c:
        model = c.upload_model("model.onnx")
        train = c.upload_dataset({"x": x_train, "y": y_train}, name="train")
        job = c.submit("optimize", model, datasets={"train": train, "validation": val},
                       params={"max_accuracy_drop": 0.01})
        report = job.wait().report()          # typed: OptimizeReport
        c.download_model(report.output_model_id, "optimized.onnx")

Errors from the service (problem+json) are raised as `ProblemError` subclasses carrying `type`, `detail` and the
whole problem; connection failures, 429s and 502-504s are retried with exponential backoff (or after the
Retry-After the server asks for); every job submission carries an Idempotency-Key, so a retried POST never
makes two jobs.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from onnxsmith.types import (
    REPORT_TYPES,
    Artifact,
    Dataset,
    JobState,
    Kind,
    Model,
    OptimizeParams,
    Report,
)

DEFAULT_TIMEOUT = 600.0
RETRY_STATUSES = (429, 502, 503, 504)
MAX_RETRY_AFTER_S = 60.0
FINAL = ("succeeded", "failed", "cancelled")


# -- errors ----------------------------------------------------------------------------------------------------
class OnnxsmithError(Exception):
    """Base of every error the SDK raises."""


class ConnectionFailed(OnnxsmithError):
    """The server could not be reached (after the retries)."""


class ProblemError(OnnxsmithError):
    """A problem+json answer: `status`, `type` (the short name, e.g. "incompatible-model"), `detail`, `problem`."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        self.type = str(problem.get("type", "")).rsplit("/", 1)[-1] or f"http-{status}"
        self.detail = str(problem.get("detail", ""))
        self.errors = problem.get("errors") or []
        super().__init__(f"{status} {self.type}: {self.detail}")


class BadRequest(ProblemError):
    """400/405/413/415 and other 4xx not named below."""


class Unauthorized(ProblemError):
    """401: missing, invalid or revoked API key."""


class NoApiKey(Unauthorized):
    """401 to a client that has no API key at all: the message says how to give it one."""


class BadApiKey(OnnxsmithError):
    """The API key given cannot be sent (characters a header cannot carry); nothing was sent."""


class NotFound(ProblemError):
    """404: unknown id, or another tenant's."""


class Conflict(ProblemError):
    """409: e.g. a report of a job that has not succeeded, an idempotency key reused with another body."""


class Invalid(ProblemError):
    """422: the request cannot run (bad params, data that does not fit the model, ...)."""


class ServiceUnavailable(ProblemError):
    """503 (after the retries): e.g. the broker is down."""


class TooManyRequests(ProblemError):
    """429 (after the retries): e.g. this key already has as many uploads in flight as the server allows."""


class ServerError(ProblemError):
    """500: a bug in the service."""


class JobFailed(OnnxsmithError):
    """`Job.wait()` on a job that failed or was cancelled: `job` is its last state, `code`/`detail` its error."""

    def __init__(self, job: JobState) -> None:
        self.job = job
        error = job.error or {}
        self.code, self.detail = error.get("code", job.status), error.get("detail", "")
        super().__init__(f"job {job.id} {job.status}" + (f": {self.code}: {self.detail}" if job.error else ""))


_BY_STATUS = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def problem_error(response: httpx.Response) -> ProblemError:
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"detail": response.text[:500]}
    cls = _BY_STATUS.get(response.status_code) or (ServerError if response.status_code >= 500 else BadRequest)
    return cls(response.status_code, problem)


# -- shared helpers --------------------------------------------------------------------------------------------
def _id(thing: Any) -> str:
    """An id from an id, a returned object (Model, Dataset, Job, Artifact, ...) or a dict with "id"."""
    if isinstance(thing, str):
        return thing
    if isinstance(thing, Mapping):
        return str(thing["id"])
    return str(thing.id)


def _params(params: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json", exclude_unset=True)
    return dict(params)


def job_body(
    kind: str,
    model: str | BaseModel,
    datasets: Mapping[str, str | BaseModel] | None,
    params: Mapping[str, Any] | BaseModel | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "model_id": _id(model),
        "datasets": {role: _id(d) for role, d in (datasets or {}).items()},
        "params": _params(params),
    }


def _base_url(given: str | None) -> str:
    return (given or os.environ.get("ONNXSMITH_URL", "http://127.0.0.1:8000")).rstrip("/")


NO_KEY_HINT = (
    "no API key set: pass api_key= to Client (--api-key on the command line) or set ONNXSMITH_API_KEY; "
    "create one on the server with `onnxsmith keys create --tenant NAME`"
)


def _connection(base_url: str, api_key: str | None) -> dict[str, Any]:
    """httpx client arguments; the key defaults to ONNXSMITH_API_KEY. Without a key no Authorization header is
    sent (the calls that need one answer NoApiKey)."""
    key = (api_key or os.environ.get("ONNXSMITH_API_KEY", "")).strip()
    if not key:
        return {"base_url": base_url}
    if not key.isascii() or not key.isprintable() or " " in key:
        raise BadApiKey(
            "the API key has characters an HTTP header cannot carry (spaces, line breaks or non-ASCII): "
            "check ONNXSMITH_API_KEY or --api-key (keys look like osk_ followed by 43 letters, digits, - or _)"
        )
    return {"base_url": base_url, "headers": {"Authorization": f"Bearer {key}"}}


# Transport errors worth another attempt: the request may not have arrived, or its answer was lost. Every call the
# SDK retries is safe to repeat: GETs, uploads (content-addressed), job POSTs (Idempotency-Key), DELETEs (a 404 on
# a repeat means an earlier attempt did it). Timeouts on a slow answer and malformed URLs are not retried.
RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def _settle(
    method: str, attempt: int, retries: int, base_url: str, response: httpx.Response | None, exc: Exception | None
) -> httpx.Response | None:
    """What one attempt means: the response to hand back, None to try again, or an exception raised."""
    if exc is not None:
        if isinstance(exc, RETRYABLE) and attempt < retries:
            return None
        tries = f" after {attempt + 1} attempt(s)" if isinstance(exc, RETRYABLE) else ""
        raise ConnectionFailed(f"cannot reach onnxsmith at {base_url} ({type(exc).__name__}: {exc}){tries}") from exc
    assert response is not None
    if response.status_code in RETRY_STATUSES and attempt < retries:
        return None
    if method == "DELETE" and attempt > 0 and response.status_code == 404:
        return response  # an earlier attempt deleted it and its answer was lost
    if response.status_code == 401 and "authorization" not in response.request.headers:
        raise NoApiKey(401, {"type": "unauthorized", "detail": NO_KEY_HINT})
    if response.status_code >= 400:
        raise problem_error(response)
    return response


def _backoff(attempt: int, base: float, response: httpx.Response | None = None) -> float:
    """Seconds before the next attempt: exponential, or the server's Retry-After when it asks for longer
    (capped at MAX_RETRY_AFTER_S)."""
    pause = min(base * 2**attempt, 30.0)
    asked = response.headers.get("retry-after", "") if response is not None else ""
    if asked.strip().isascii() and asked.strip().isdigit():
        pause = max(pause, min(float(asked.strip()), MAX_RETRY_AFTER_S))
    return pause


@contextmanager
def model_file(path: Path) -> Iterator[Path]:
    """A model to upload: a file (an .onnx file, or a .zip/.tar archive of a model with its external data) as it
    is; a folder (an .onnx file with its data files) packed into a temporary .tar first."""
    if not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="onnxsmith-") as tmp:
        packed = Path(tmp) / f"{path.name}.tar"
        with tarfile.open(packed, "w") as archive:
            for member in sorted(p for p in path.rglob("*") if p.is_file()):
                archive.add(member, arcname=member.relative_to(path).as_posix(), recursive=False)
        yield packed


@contextmanager
def dataset_file(data: Any, name: str | None) -> Iterator[tuple[Path, str | None]]:
    """A file to upload for `data`: a path as it is; a mapping of numpy arrays (or an (x, y) pair) as a temporary
    .npz; a pandas DataFrame as a temporary .parquet. Yields (path, default name)."""
    if isinstance(data, str | os.PathLike):
        yield Path(data), name
        return
    with tempfile.TemporaryDirectory(prefix="onnxsmith-") as tmp:
        stem = name or "dataset"
        if hasattr(data, "to_parquet"):  # a pandas DataFrame (pyarrow writes it)
            path = Path(tmp) / f"{stem}.parquet"
            data.to_parquet(path, index=False)
        else:
            import numpy as np

            arrays = {"x": data[0], "y": data[1]} if isinstance(data, tuple) and len(data) == 2 else data
            if not isinstance(arrays, Mapping):
                raise TypeError("upload_dataset takes a path, {name: array}, (x, y) or a pandas DataFrame")
            path = Path(tmp) / f"{stem}.npz"
            np.savez(path, **{str(k): np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        yield path, name or stem


class _ProgressReader(io.RawIOBase):
    """A file read in chunks that advances a progress callback (multipart uploads stream from it)."""

    def __init__(self, f: Any, advance: Any) -> None:
        self.f, self.advance = f, advance

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.advance(len(chunk))
        return chunk


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@contextmanager
def _bar(description: str, total: float | None, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, or a no-op; yields update(completed=..., description=...)."""
    if not enabled:
        yield lambda **_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    if total and total > 1:
        columns.insert(2, DownloadColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda **kw: bar.update(task, **kw)


# -- the synchronous client ------------------------------------------------------------------------------------
class Job:
    """A submitted job bound to its client: `refresh()`, `wait()`, `report()`, `cancel()`, `artifacts()`."""

    def __init__(self, client: Client, state: JobState) -> None:
        self.client, self.state = client, state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.state, name)

    def __repr__(self) -> str:
        return f"Job({self.state.id!r}, {self.state.kind!r}, {self.state.status!r})"

    def refresh(self) -> Job:
        self.state = self.client.get_job(self.state.id).state
        return self

    def wait(self, *, timeout: float | None = None, poll: float = 1.0, progress: bool | None = None) -> Job:
        """Until the job ends; a progress bar on stderr when it is a terminal (`progress` forces it on or off).
        Raises JobFailed if it failed or was cancelled, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with _bar(f"{self.state.kind} {self.state.id}", 1.0, _show_progress(progress)) as update:
            while True:
                self.refresh()
                update(completed=self.state.progress, description=f"{self.state.kind}: {self.state.stage}"[:70])
                if self.state.status in FINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.state.id} still {self.state.status} after {timeout} s")
                time.sleep(poll)
        if self.state.status != "succeeded":
            raise JobFailed(self.state)
        return self

    def report(self) -> Report:
        return self.client.report(self.state.id)

    def cancel(self) -> Job:
        self.state = self.client.cancel_job(self.state.id).state
        return self

    def artifacts(self) -> list[Artifact]:
        return self.client.list_artifacts(self.state.id)


class Client:
    """Synchronous client. `retries` applies to connection errors and 429/502/503/504 (backoff 0.5 s, doubling, or
    longer when the server's Retry-After asks for it)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.retries, self.backoff = _base_url(base_url), retries, backoff
        self._http = httpx.Client(timeout=timeout, transport=transport, **_connection(self.base_url, api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # transport ------------------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, *, files: Any = None, **kw: Any) -> httpx.Response:
        """One call with retries; `files` is a callable that opens the multipart parts afresh for each attempt
        (an error opening or reading the local file is raised as it is, never retried)."""
        for attempt in range(self.retries + 1):
            response = error = None
            try:
                if files is not None:
                    with files() as parts:
                        response = self._http.request(method, url, files=parts, **kw)
                else:
                    response = self._http.request(method, url, **kw)
            except httpx.TransportError as exc:
                error = exc
            settled = _settle(method, attempt, self.retries, self.base_url, response, error)
            if settled is not None:
                return settled
            time.sleep(_backoff(attempt, self.backoff, response))
        raise AssertionError("unreachable")

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return self._request(method, url, **kw).json()

    def _pages(self, url: str, limit: int, **filters: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit, **{k: v for k, v in filters.items() if v is not None}}
        while True:
            page = self._json("GET", url, params=params)
            items.extend(page["items"])
            if not page.get("next_cursor"):
                return items
            params["cursor"] = page["next_cursor"]

    def _upload(self, url: str, path: Path, fields: dict[str, Any], progress: bool | None) -> dict[str, Any]:
        size = path.stat().st_size
        with _bar(f"uploading {path.name}", size, _show_progress(progress)) as update:
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                update(completed=done[0])

            @contextmanager
            def parts() -> Iterator[dict[str, Any]]:
                done[0] = 0
                with open(path, "rb") as f:
                    yield {"file": (path.name, _ProgressReader(f, advance))}

            data = {k: v for k, v in fields.items() if v is not None} or None
            return self._json("POST", url, files=parts, data=data)

    # models -----------------------------------------------------------------------------------------------------
    def upload_model(
        self,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        progress: bool | None = None,
        resumable: bool | None = None,
        resume: str | None = None,
    ) -> Model:
        """Upload an ONNX file (streamed); the existing model when these bytes were uploaded before. A model with
        external data: its folder (packed into a .tar on the way) or a .zip/.tar archive of it. Files over 64 MiB
        (or with `resumable=True`) go in parts, sent in parallel and each re-sent after a dropped connection; an
        upload that still failed resumes with `resume=<its id>` (the error names it)."""
        from onnxsmith.resumable import RESUMABLE_BYTES, upload_in_parts

        with model_file(Path(path)) as file:
            if resume or (resumable if resumable is not None else file.stat().st_size > RESUMABLE_BYTES):
                return Model.model_validate(upload_in_parts(self, file, name, progress, resume))
            return Model.model_validate(self._upload("/v1/models", file, {"name": name}, progress))

    def get_model(self, model: str | BaseModel) -> Model:
        return Model.model_validate(self._json("GET", f"/v1/models/{_id(model)}"))

    def list_models(self, *, limit: int = 100) -> list[Model]:
        return [Model.model_validate(m) for m in self._pages("/v1/models", limit)]

    def delete_model(self, model: str | BaseModel) -> None:
        self._request("DELETE", f"/v1/models/{_id(model)}")

    def download_model(self, model: str | BaseModel, dest: str | os.PathLike, *, progress: bool | None = None) -> Path:
        return self._download(f"/v1/models/{_id(model)}/content", Path(dest), progress)

    # datasets ---------------------------------------------------------------------------------------------------
    def upload_dataset(
        self,
        data: Any,
        *,
        name: str | None = None,
        label: str | None = None,
        kind: str | None = None,
        progress: bool | None = None,
    ) -> Dataset:
        """A file (.npz, .csv, .parquet; .json/.csv training history with kind="history"), a mapping of numpy
        arrays (`{"x": ..., "y": ...}`), an `(x, y)` pair, or a pandas DataFrame (sent as parquet)."""
        with dataset_file(data, name) as (path, default_name):
            fields = {"name": default_name, "label": label, "kind": kind}
            return Dataset.model_validate(self._upload("/v1/datasets", path, fields, progress))

    def get_dataset(self, dataset: str | BaseModel) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{_id(dataset)}"))

    def list_datasets(self, *, limit: int = 100) -> list[Dataset]:
        return [Dataset.model_validate(d) for d in self._pages("/v1/datasets", limit)]

    def delete_dataset(self, dataset: str | BaseModel) -> None:
        self._request("DELETE", f"/v1/datasets/{_id(dataset)}")

    # jobs -------------------------------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        model: str | BaseModel,
        *,
        datasets: Mapping[str, str | BaseModel] | None = None,
        params: Mapping[str, Any] | BaseModel | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job. An Idempotency-Key is generated when none is given, so the retries never make two jobs."""
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
        body = job_body(kind, model, datasets, params)
        return Job(self, JobState.model_validate(self._json("POST", "/v1/jobs", json=body, headers=headers)))

    def optimize(
        self,
        model: str | BaseModel,
        *,
        train: str | BaseModel | None = None,
        validation: str | BaseModel | None = None,
        test: str | BaseModel | None = None,
        calibration: str | BaseModel | None = None,
        params: OptimizeParams | None = None,
        **kwargs: Any,
    ) -> Job:
        """`submit("optimize", ...)` with the datasets by role and typed params: `params=OptimizeParams(...)`, or
        the same fields as keywords (max_accuracy_drop=0.01, objective="size", ...), checked here before sending."""
        typed = params or OptimizeParams(**kwargs)
        roles = {"train": train, "validation": validation, "test": test, "calibration": calibration}
        datasets = {r: d for r, d in roles.items() if d is not None}
        return self.submit("optimize", model, datasets=datasets, params=typed)

    def list_kinds(self) -> list[Kind]:
        """Every job kind with its datasets, params schema and whether a live worker can run it."""
        return [Kind.model_validate(k) for k in self._json("GET", "/v1/kinds")]

    def get_job(self, job: str | BaseModel) -> Job:
        return Job(self, JobState.model_validate(self._json("GET", f"/v1/jobs/{_id(job)}")))

    def list_jobs(self, *, status: str | None = None, kind: str | None = None, limit: int = 100) -> list[Job]:
        return [Job(self, JobState.model_validate(j)) for j in self._pages("/v1/jobs", limit, status=status, kind=kind)]

    def cancel_job(self, job: str | BaseModel) -> Job:
        return Job(self, JobState.model_validate(self._json("POST", f"/v1/jobs/{_id(job)}/cancel")))

    def report(self, job: str | BaseModel) -> Report:
        """The report of a succeeded job, typed by its kind (unknown fields are kept as attributes)."""
        data = self._json("GET", f"/v1/jobs/{_id(job)}/report")
        return REPORT_TYPES.get(data.get("kind"), Report).model_validate(data)

    def report_html(self, job: str | BaseModel) -> str:
        return self._request("GET", f"/v1/jobs/{_id(job)}/report.html").text

    def list_artifacts(self, job: str | BaseModel) -> list[Artifact]:
        return [Artifact.model_validate(a) for a in self._json("GET", f"/v1/jobs/{_id(job)}/artifacts")]

    def download(self, artifact: str | BaseModel, dest: str | os.PathLike, *, progress: bool | None = None) -> Path:
        """An artifact's file, streamed to `dest`."""
        return self._download(f"/v1/artifacts/{_id(artifact)}/content", Path(dest), progress)

    def _download(self, url: str, dest: Path, progress: bool | None) -> Path:
        """Streamed to `dest.part`, renamed when complete; the partial file is removed when it fails."""
        tmp = dest.with_name(dest.name + ".part")
        for attempt in range(self.retries + 1):
            try:
                with self._http.stream("GET", url) as response:
                    if response.status_code >= 400:
                        response.read()
                        if _settle("GET", attempt, self.retries, self.base_url, response, None) is None:
                            time.sleep(_backoff(attempt, self.backoff, response))
                            continue
                    total = int(response.headers.get("content-length") or 0) or None
                    with (
                        _bar(f"downloading {dest.name}", total, _show_progress(progress)) as update,
                        open(tmp, "wb") as out,
                    ):
                        for chunk in response.iter_bytes(1 << 20):
                            out.write(chunk)
                            update(completed=out.tell())
                    tmp.replace(dest)
                    return dest
            except httpx.TransportError as exc:
                tmp.unlink(missing_ok=True)
                _settle("GET", attempt, self.retries, self.base_url, None, exc)
                time.sleep(_backoff(attempt, self.backoff))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/readyz")


# -- the asynchronous client -----------------------------------------------------------------------------------
class AsyncClient:
    """The same calls for asyncio code: `await c.upload_model(...)`, `await c.wait(job)`, ..."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.retries, self.backoff = _base_url(base_url), retries, backoff
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, **_connection(self.base_url, api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, *, upload: Path | None = None, **kw: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = error = None
            if upload is not None:
                with open(upload, "rb") as f:  # a local file error is the caller's, not retried
                    try:
                        response = await self._http.request(method, url, files={"file": (upload.name, f)}, **kw)
                    except httpx.TransportError as exc:
                        error = exc
            else:
                try:
                    response = await self._http.request(method, url, **kw)
                except httpx.TransportError as exc:
                    error = exc
            settled = _settle(method, attempt, self.retries, self.base_url, response, error)
            if settled is not None:
                return settled
            await asyncio.sleep(_backoff(attempt, self.backoff, response))
        raise AssertionError("unreachable")

    async def upload_model(self, path: str | os.PathLike, *, name: str | None = None) -> Model:
        with model_file(Path(path)) as file:
            r = await self._request("POST", "/v1/models", upload=file, data={"name": name} if name else None)
        return Model.model_validate(r.json())

    async def upload_dataset(
        self, data: Any, *, name: str | None = None, label: str | None = None, kind: str | None = None
    ) -> Dataset:
        with dataset_file(data, name) as (path, default_name):
            fields = {k: v for k, v in {"name": default_name, "label": label, "kind": kind}.items() if v is not None}
            r = await self._request("POST", "/v1/datasets", upload=path, data=fields or None)
        return Dataset.model_validate(r.json())

    async def submit(
        self,
        kind: str,
        model: str | BaseModel,
        *,
        datasets: Mapping[str, str | BaseModel] | None = None,
        params: Mapping[str, Any] | BaseModel | None = None,
        idempotency_key: str | None = None,
    ) -> JobState:
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
        r = await self._request("POST", "/v1/jobs", json=job_body(kind, model, datasets, params), headers=headers)
        return JobState.model_validate(r.json())

    async def get_job(self, job: str | BaseModel) -> JobState:
        return JobState.model_validate((await self._request("GET", f"/v1/jobs/{_id(job)}")).json())

    async def wait(self, job: str | BaseModel, *, timeout: float | None = None, poll: float = 1.0) -> JobState:
        """Until the job ends; JobFailed if it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = await self.get_job(job)
            if state.status in FINAL:
                if state.status != "succeeded":
                    raise JobFailed(state)
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {state.id} still {state.status} after {timeout} s")
            await asyncio.sleep(poll)

    async def cancel_job(self, job: str | BaseModel) -> JobState:
        return JobState.model_validate((await self._request("POST", f"/v1/jobs/{_id(job)}/cancel")).json())

    async def report(self, job: str | BaseModel) -> Report:
        data = (await self._request("GET", f"/v1/jobs/{_id(job)}/report")).json()
        return REPORT_TYPES.get(data.get("kind"), Report).model_validate(data)

    async def list_artifacts(self, job: str | BaseModel) -> list[Artifact]:
        data = (await self._request("GET", f"/v1/jobs/{_id(job)}/artifacts")).json()
        return [Artifact.model_validate(a) for a in data]

    async def download(self, artifact: str | BaseModel, dest: str | os.PathLike) -> Path:
        """An artifact's file, streamed to `dest` (via `dest.part`, removed if it fails; not retried)."""
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".part")
        try:
            async with self._http.stream("GET", f"/v1/artifacts/{_id(artifact)}/content") as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise problem_error(response)
                with open(tmp, "wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        out.write(chunk)
                tmp.replace(dest)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise ConnectionFailed(f"cannot reach onnxsmith at {self.base_url} ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest
