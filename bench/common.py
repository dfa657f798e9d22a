"""What every bench script shares: run a job kind on files the way a worker does (engine.registry.run_in_child, the
sandboxed entry point), with inputs built by engine.local from the files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from engine.local import local_inputs
from engine.registry import get_kind, run_in_child


def job(
    kind: str, model: Path, datasets: dict[str, Path], params: dict[str, Any], work: Path, threads: int = 1
) -> dict:
    """{"report", "artifacts", "out_dir"}: the job's output, and the folder its files are in."""
    out = Path(tempfile.mkdtemp(dir=work)) / "out"
    # eval resolved from test / validation as the service does
    inputs = local_inputs(model, out, datasets, max_threads=threads, kind=get_kind(kind)).model_dump(mode="json")
    return {**run_in_child(kind, inputs, params), "out_dir": out}
