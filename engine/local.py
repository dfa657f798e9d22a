"""JobInputs from files on disk, for running a job kind in-process: the CLI's `--local` mode and the tests.

The worker builds JobInputs from stored blobs and rows; this builds the same from paths, checking and
inspecting each file the way an upload is checked (in this process: the user's own files)."""

from __future__ import annotations

from pathlib import Path

from engine.core.inputs import DatasetInput, JobInputs, resolve_roles
from engine.core.kind import AnyKind
from engine.datasets import Format, inspect_dataset
from engine.inspect import check_and_inspect

FORMATS: dict[str, Format] = {".npz": "npz", ".csv": "csv", ".parquet": "parquet", ".json": "json"}


def local_inputs(
    model: Path,
    out_dir: Path,
    datasets: dict[str, Path],
    *,
    max_threads: int = 1,
    labels: dict[str, str] | None = None,
    kind: AnyKind | None = None,
) -> JobInputs:
    """Datasets by role (`history` is read as a training history); `eval` resolved as the service does for `kind`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_role: dict[str, DatasetInput] = {}
    for role, path in datasets.items():
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path.name}: unknown dataset format (use {', '.join(FORMATS)})")
        summary = inspect_dataset(
            str(path), fmt, "history" if role == "history" else "samples", (labels or {}).get(role)
        )
        label = summary.label.name if summary.label else None
        by_role[role] = DatasetInput(path=str(path), format=fmt, label=label, summary=summary)
    if kind is not None:
        for role, source in resolve_roles(kind.name, kind.roles, kind.required, {r: r for r in by_role}).items():
            by_role.setdefault(role, by_role[source])
    return JobInputs(
        model_path=str(model),
        model_info=check_and_inspect(str(model)),
        datasets=by_role,
        out_dir=str(out_dir),
        max_threads=max_threads,
    )
