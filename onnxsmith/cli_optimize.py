"""`onnxsmith optimize MODEL --train ... --val ... --max-drop 1%`: on a server, or `--local` with no server at all.

On a server, MODEL and the datasets are local files (uploaded first) or ids of what is already there. Locally, the
engine runs in this process (the same `optimize` kind the workers run) and writes optimized.onnx, report.json and
report.html to `--out`. Exit codes as for the other commands (onnxsmith/cli_remote.py); 6 when the goal is not met.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from onnxsmith.cli_remote import (
    API_KEY,
    EXIT_GOAL_NOT_MET,
    EXIT_JOB_FAILED,
    EXIT_REFUSED,
    JSON,
    SERVER,
    console,
    err,
    remote,
)


def _drop(text: str) -> float:
    """'1%' -> 0.01; '0.01' -> 0.01."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise typer.BadParameter(f"--max-drop takes a percentage (1%) or a fraction (0.01), not {text!r}") from None
    if not 0 <= value <= 1:
        raise typer.BadParameter("--max-drop must be between 0% and 100%")
    return value


def _floats(text: str) -> list[float]:
    try:
        return [float(r) for r in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--ratios takes comma-separated fractions (0.3,0.5), not {text!r}") from None


def _summary(report: dict[str, Any]) -> Table:
    t = Table(title=f"optimize: goal {'met' if report['goal_met'] else 'NOT met'} in {report['seconds']:.0f} s")
    for c in ("#", "chain", "status", "metric", "drop", "speed-up", "size", "front"):
        t.add_column(c)
    mode = report["goal"]["drop_mode"]
    for r in [report["original"], *report["trials"]]:
        mark = ""
        if r["index"] == report["recommended"]:
            mark = " ← recommended" if r["index"] else (" ← keep it" if report["goal_met"] else "")
        elif r["index"] == report.get("closest"):
            mark = " ← closest (goal not met)"
        status = r["status"] + (f" ({r['error']['code']})" if r.get("error") else "")
        t.add_row(
            str(r["index"]), Text(r["name"] + mark), Text(status),
            "" if r.get("metric") is None else f"{r['metric']:.4f}",
            "" if not r.get("drop") else f"{r['drop'][mode]:+.4f}",
            "" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
            "" if r.get("size_ratio") is None else f"{r['size_ratio']:.1%}",
            "yes" if r.get("pareto") else "",
        )  # fmt: skip
    return t


def _finish(report: dict[str, Any], as_json: bool, where: str) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        if report.get("fit"):
            fit = report["fit"]
            console.print(f"fit of the original: [bold]{fit['verdict']}[/bold] — {escape(fit['summary'])}")
        console.print(_summary(report))
        for s in report.get("skipped", []):
            err.print(f"not tried: {escape(s)}")
        for w in report.get("warnings", []):
            err.print(f"[yellow]warning:[/yellow] {escape(w)}")
        console.print(where)
    if not report["goal_met"]:
        raise typer.Exit(EXIT_GOAL_NOT_MET)


def optimize(
    model: str = typer.Argument(..., help="An .onnx file, or the id of a model on the server"),
    train: str | None = typer.Option(None, "--train", help="Train dataset (file or id): diagnosis and distillation"),
    val: str | None = typer.Option(None, "--val", help="Validation dataset (file or id)"),
    test: str | None = typer.Option(None, "--test", help="Test dataset (file or id); eval uses it, else --val"),
    calibration: str | None = typer.Option(None, "--calibration", help="Calibration dataset for static int8"),
    max_drop: str = typer.Option("1%", "--max-drop", help="Most the accuracy may drop: 1% or 0.01"),
    absolute: bool = typer.Option(False, "--absolute", help="--max-drop in points of accuracy, not relative"),
    objective: str = typer.Option("latency", help="latency or size"),
    max_latency_ms: float | None = typer.Option(None, help="Target p50 latency (batch 1, 1 thread)"),
    max_size: int | None = typer.Option(None, "--max-size", help="Target file size in bytes"),
    methods: str | None = typer.Option(None, help="Comma-separated subset of simplify,quantize,prune,distill"),
    ratios: str | None = typer.Option(None, help="Comma-separated prune/distill ratios, e.g. 0.3,0.5"),
    max_seconds: float | None = typer.Option(None, help="Time budget of all trials"),
    local: bool = typer.Option(False, "--local", help="Run here, in this process, with no server"),
    out: Path = typer.Option(Path("onnxsmith-optimized"), "--out", help="--local: folder for the model and report"),
    server: str | None = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON,
) -> None:
    """Find the smallest/fastest model within --max-drop of the original's accuracy, and say whether it fits."""
    params: dict[str, Any] = {
        "max_accuracy_drop": _drop(max_drop),
        "drop_mode": "absolute" if absolute else "relative",
        "objective": objective,
    }
    optional = {
        "max_latency_ms": max_latency_ms,
        "max_size_bytes": max_size,
        "max_seconds": max_seconds,
        "methods": methods.split(",") if methods else None,
        "ratios": _floats(ratios) if ratios else None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    datasets = {"train": train, "validation": val, "test": test, "calibration": calibration}
    given = {role: d for role, d in datasets.items() if d}
    if local:
        _local(Path(model), given, params, out, as_json)
    else:
        _remote(model, given, params, server, api_key, as_json)


def _remote(model: str, datasets: dict[str, str], params: dict[str, Any], server: Any, key: Any, as_json: bool) -> None:
    with remote(server, key) as c:
        model_id = c.upload_model(model).id if Path(model).is_file() else model
        ids = {role: c.upload_dataset(d, name=role).id if Path(d).is_file() else d for role, d in datasets.items()}
        job = c.submit("optimize", model_id, datasets=ids, params=params)
        err.print(f"job {job.id} queued")
        job.wait()
        report = job.report().model_dump(mode="json")
    made = report.get("output_model_id")
    what = "recommended model" if report["goal_met"] else "closest model (goal not met)"
    _finish(report, as_json, f"job {job.id}; {what}: {made or 'the original (nothing registered)'}")


def _local(model: Path, datasets: dict[str, str], params: dict[str, Any], out: Path, as_json: bool) -> None:
    import logging

    from pydantic import ValidationError
    from rich.progress import Progress

    from engine.core.errors import EngineError
    from engine.local import local_inputs
    from engine.registry import get_kind, render_report

    # ONNX Runtime's quantizer logs advice on the root logger for every configuration it tries
    logging.getLogger().setLevel(logging.ERROR)
    kind = get_kind("optimize")
    for stale in ("optimized.onnx", "closest.onnx"):  # a previous run's
        (out / stale).unlink(missing_ok=True)
    try:  # the request: refused as the service would refuse it (exit 4)
        parsed = kind.Params.model_validate(params)
        inputs = local_inputs(model, out, {r: Path(p) for r, p in datasets.items()}, kind=kind)
        kind.validate(inputs.model_info, inputs.summaries(), parsed)
    except (EngineError, ValidationError, ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail if isinstance(exc, EngineError) else str(exc))}")
        raise typer.Exit(EXIT_REFUSED) from None
    try:  # the run: fails as a job fails (exit 5)
        with Progress(console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
            task = bar.add_task("optimize", total=1.0)
            report = kind.execute(
                inputs, parsed, lambda f, s: bar.update(task, completed=f, description=s[:70]), get_kind
            ).report
    except EngineError as exc:
        err.print(f"[red]optimize failed:[/red] {escape(f'{exc.code.value}: {exc.detail}')}")
        raise typer.Exit(EXIT_JOB_FAILED) from None
    data = report.model_dump(mode="json")
    (out / "report.json").write_text(json.dumps(data, indent=2))
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    job = {"local": True, "kind": "optimize", "status": "succeeded", "model_id": model.name, "finished_at": finished}
    (out / "report.html").write_text(render_report(data, job))
    produced = (data.get("recommended_model") or {}).get("filename")
    where = f"written to {out}/: " + (f"{produced}, " if produced else "") + "report.json, report.html"
    _finish(data, as_json, where)
