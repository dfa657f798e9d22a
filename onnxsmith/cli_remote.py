"""`onnxsmith models|datasets|jobs ...`: the REST API from the shell, through the SDK.

Every command takes `--server` (or ONNXSMITH_URL), `--api-key` (or ONNXSMITH_API_KEY) and `--json` (machine
output on stdout). Exit codes: 0 done; 2 bad command line; 3 the server cannot be reached; 4 the service refused
the request (4xx: its problem's type and detail are printed); 5 the job failed or was cancelled; 6 optimize ended
with goal_met false; 7 the service failed (5xx, after the retries).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from onnxsmith.client import BadApiKey, Client, ConnectionFailed, JobFailed, ProblemError

EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_JOB_FAILED, EXIT_GOAL_NOT_MET, EXIT_SERVER_ERROR = 3, 4, 5, 6, 7

console = Console()
err = Console(stderr=True, soft_wrap=True)  # long paths and keys stay whole (copy-paste)
models_app = typer.Typer(help="Models: upload, list, show.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets: upload, list, show.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: kinds, submit, list, show, wait, cancel, report.", no_args_is_help=True)

SERVER = typer.Option(None, "--server", envvar="ONNXSMITH_URL", help="Base URL (default http://127.0.0.1:8000)")
API_KEY = typer.Option(None, "--api-key", envvar="ONNXSMITH_API_KEY", help="API key", show_default=False)
JSON = typer.Option(False, "--json", help="Print JSON on stdout instead of tables")


@contextmanager
def remote(server: str | None, api_key: str | None) -> Iterator[Client]:
    """A client; SDK errors become a message on stderr and the documented exit code."""
    try:
        with Client(server, api_key, retries=2) as client:
            yield client
    except ConnectionFailed as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except BadApiKey as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_REFUSED) from None
    except ProblemError as exc:
        err.print(f"[red]error {exc.status} {escape(exc.type)}:[/red] {escape(exc.detail)}")
        for e in exc.errors:
            err.print(escape(f"  {e.get('field')}: {e.get('message')}"))
        raise typer.Exit(EXIT_SERVER_ERROR if exc.status >= 500 else EXIT_REFUSED) from None
    except JobFailed as exc:
        err.print(f"[red]job {exc.job.id} {exc.job.status}:[/red] {escape(f'{exc.code}: {exc.detail}')}")
        raise typer.Exit(EXIT_JOB_FAILED) from None


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json:
        print(json.dumps(data.model_dump(mode="json") if hasattr(data, "model_dump") else data, indent=2))
    elif table is not None:
        console.print(table)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title)
    for i, c in enumerate(columns):
        widest = max((len(str(r[i])) for r in rows), default=0)
        # ids are copied into the next command: never wrapped or cut
        t.add_column(c, no_wrap=c == "id", min_width=widest if c == "id" else None)
    for r in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in r))  # values are data, never rich markup
    return t


def _kv(title: str, data: dict[str, Any]) -> Table:
    return _table(
        title, ["field", "value"], [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in data.items()]
    )


# -- models ----------------------------------------------------------------------------------------------------
@models_app.command("upload")
def models_upload(
    path: Path = typer.Argument(..., exists=True), name: str | None = None,
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """Upload an ONNX file (streamed, with a progress bar on a terminal); a model with external data as its folder
    (packed into a .tar on the way) or as a .zip/.tar archive."""
    with remote(server, api_key) as c:
        m = c.upload_model(path, name=name)
    emit(m, as_json, _kv(f"model {m.id}", {"name": m.name, "size_bytes": m.size_bytes, "sha256": m.sha256}))


@models_app.command("list")
def models_list(server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON) -> None:
    """The tenant's models, newest first."""
    with remote(server, api_key) as c:
        items = c.list_models()
    rows = [[m.id, m.name, m.size_bytes, m.info.get("parameter_count"), m.source_job_id or "upload"] for m in items]
    emit([m.model_dump(mode="json") for m in items], as_json,
         _table("models", ["id", "name", "bytes", "parameters", "source"], rows))  # fmt: skip


@models_app.command("show")
def models_show(
    model_id: str, server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON
) -> None:
    """One model with its inspection."""
    with remote(server, api_key) as c:
        m = c.get_model(model_id)
    info = m.info
    emit(m, as_json, _kv(f"model {m.id}", {
        "name": m.name, "size_bytes": m.size_bytes, "source_job_id": m.source_job_id,
        "inputs": info.get("inputs"), "outputs": info.get("outputs"), "parameters": info.get("parameter_count"),
        "macs_per_sample": info.get("macs_per_sample"), "ops": info.get("op_histogram"),
    }))  # fmt: skip


# -- datasets --------------------------------------------------------------------------------------------------
@datasets_app.command("upload")
def datasets_upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False), name: str | None = None,
    label: str | None = typer.Option(None, help="The label array/column (default: y or label)"),
    kind: str | None = typer.Option(None, help="samples (default) or history"),
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """Upload a dataset file: .npz, .csv, .parquet; a training history (.json, .csv) with --kind history."""
    with remote(server, api_key) as c:
        d = c.upload_dataset(path, name=name, label=label, kind=kind)
    emit(
        d, as_json, _kv(f"dataset {d.id}", {"name": d.name, "samples": d.summary.get("sample_count"), "label": d.label})
    )


@datasets_app.command("list")
def datasets_list(server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON) -> None:
    """The tenant's datasets, newest first."""
    with remote(server, api_key) as c:
        items = c.list_datasets()
    rows = [[d.id, d.name, d.kind, d.format, d.summary.get("sample_count"), d.label] for d in items]
    emit([d.model_dump(mode="json") for d in items], as_json,
         _table("datasets", ["id", "name", "kind", "format", "samples", "label"], rows))  # fmt: skip


@datasets_app.command("show")
def datasets_show(
    dataset_id: str, server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON
) -> None:
    """One dataset with its summary."""
    with remote(server, api_key) as c:
        d = c.get_dataset(dataset_id)
    emit(d, as_json, _kv(f"dataset {d.id}", {"name": d.name, "kind": d.kind, "format": d.format, **d.summary}))


# -- jobs ------------------------------------------------------------------------------------------------------
def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _job_row(j: Any) -> list[Any]:
    error = f"{j.error['code']}: {j.error['detail']}" if j.error else ""
    return [j.id, j.kind, j.status, f"{j.progress:.0%}", j.stage, error]


JOB_COLUMNS = ["id", "kind", "status", "progress", "stage", "error"]


@jobs_app.command("submit")
def jobs_submit(
    kind: str = typer.Argument(..., help="evaluate, benchmark, compare, quantize, diagnose, prune, distill, optimize"),
    model: str = typer.Option(..., "--model", help="Model id"),
    dataset: list[str] = typer.Option([], "--dataset", help="ROLE=DATASET_ID (train, validation, test, eval, ...)"),
    param: list[str] = typer.Option([], "--param", help="NAME=VALUE; VALUE is JSON where it parses (0.5, [1,8])"),
    params_json: str | None = typer.Option(None, "--params", help="All params as one JSON object"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to end (progress bar on a terminal)"),
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """Queue a job (with an Idempotency-Key, so the CLI's retries never make two)."""
    try:
        params = json.loads(params_json) if params_json else {}
    except ValueError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise typer.BadParameter("--params must be a JSON object")
    params.update({k: _value(v) for k, v in _pairs(param, "--param").items()})
    with remote(server, api_key) as c:
        job = c.submit(kind, model, datasets=_pairs(dataset, "--dataset"), params=params)
        if wait:
            job.wait()
    emit(job.state, as_json, _table("job", JOB_COLUMNS, [_job_row(job)]))


@jobs_app.command("kinds")
def jobs_kinds(server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON) -> None:
    """The job kinds: datasets they read, their queue, and whether a live worker can run them."""
    with remote(server, api_key) as c:
        kinds = c.list_kinds()
    rows = [[k.name, ", ".join(k.dataset_roles), ", ".join(k.required_roles), k.queue, ", ".join(k.needs),
             f"{k.runnable} ({k.live_workers} live)"] for k in kinds]  # fmt: skip
    emit([k.model_dump(mode="json") for k in kinds], as_json,
         _table("job kinds", ["kind", "datasets", "required", "queue", "needs", "workers able"], rows))  # fmt: skip


@jobs_app.command("list")
def jobs_list(
    status: str | None = None, kind: str | None = None,
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """The tenant's jobs, newest first."""
    with remote(server, api_key) as c:
        items = c.list_jobs(status=status, kind=kind)
    emit(
        [j.state.model_dump(mode="json") for j in items],
        as_json,
        _table("jobs", JOB_COLUMNS, [_job_row(j) for j in items]),
    )


@jobs_app.command("show")
def jobs_show(job_id: str, server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON) -> None:
    """A job's status, progress, stage and error."""
    with remote(server, api_key) as c:
        job = c.get_job(job_id)
    emit(job.state, as_json, _table("job", JOB_COLUMNS, [_job_row(job)]))


@jobs_app.command("wait")
def jobs_wait(
    job_id: str, timeout: float | None = typer.Option(None, help="Give up after this many seconds (exit 1)"),
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """Wait until the job ends; exit 5 if it failed or was cancelled."""
    with remote(server, api_key) as c:
        try:
            job = c.get_job(job_id).wait(timeout=timeout)
        except TimeoutError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
    emit(job.state, as_json, _table("job", JOB_COLUMNS, [_job_row(job)]))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON) -> None:
    """Cancel a queued or running job."""
    with remote(server, api_key) as c:
        job = c.cancel_job(job_id)
    emit(job.state, as_json, _table("job", JOB_COLUMNS, [_job_row(job)]))


@jobs_app.command("report")
def jobs_report(
    job_id: str, html: Path | None = typer.Option(None, help="Also write the HTML report to this file"),
    server: str | None = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON,
) -> None:  # fmt: skip
    """A succeeded job's report (JSON with --json; otherwise its headline numbers)."""
    with remote(server, api_key) as c:
        report = c.report(job_id)
        if html is not None:
            html.write_text(c.report_html(job_id))
    data = report.model_dump(mode="json")
    keys = ("kind", "verdict", "summary", "goal_met", "mode", "method", "output_model_id")
    headline: dict[str, Any] = {k: data[k] for k in keys if k in data}
    if "comparison" in data and data["comparison"]:
        c_ = data["comparison"]
        headline["size_ratio"] = round(c_["size_bytes"]["ratio"], 4)
        headline["speedup_p50"] = [round(p["speedup_p50"], 3) for p in c_["latency_ms"]]
        headline["drop"] = c_.get("drop")
    headline["warnings"] = data.get("warnings")
    emit(data, as_json, _kv(f"report of {job_id}", headline))
