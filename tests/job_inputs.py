"""JobInputs for calling a job kind the way the sandbox does (engine.jobs.run_in_child), from files on disk."""

from __future__ import annotations

from pathlib import Path

from engine.datasets import inspect_dataset
from engine.inspect import check_and_inspect


def job_inputs(tmp_path: Path, model: Path, max_threads: int = 1, **datasets: Path) -> dict:
    """Inputs with `tmp_path/out` as the output folder; datasets by role (`history` is read as a history)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ds = {}
    for role, path in datasets.items():
        fmt = path.suffix.lstrip(".")
        summary = inspect_dataset(str(path), fmt, "history" if role == "history" else "samples", None)
        label = summary.label.name if summary.label else None
        ds[role] = {"path": str(path), "format": fmt, "label": label, "summary": summary.model_dump(mode="json")}
    return {
        "model_path": str(model),
        "model_info": check_and_inspect(str(model)).model_dump(mode="json"),
        "datasets": ds,
        "out_dir": str(out),
        "max_threads": max_threads,
    }
