"""JobInputs for calling a job kind the way the sandbox does (engine.jobs.run_in_child), from files on disk."""

from __future__ import annotations

from pathlib import Path

from engine.local import local_inputs


def job_inputs(tmp_path: Path, model: Path, max_threads: int = 1, **datasets: Path) -> dict:
    """Inputs with `tmp_path/out` as the output folder; datasets by role (`history` is read as a history)."""
    return local_inputs(model, tmp_path / "out", datasets, max_threads=max_threads).model_dump(mode="json")
