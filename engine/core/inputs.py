"""What a job kind is handed: the model, other models named by its params, datasets by role, an output folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.datasets import DatasetSummary, load_samples
from engine.inspect import ModelInfo

ROLES = ("train", "validation", "test", "calibration", "eval", "history")


class DatasetInput(BaseModel):
    path: str
    format: str
    label: str | None
    summary: DatasetSummary


class ModelInput(BaseModel):
    path: str
    info: ModelInfo


class JobInputs(BaseModel):
    model_path: str
    model_info: ModelInfo
    models: dict[str, ModelInput] = Field(
        default_factory=dict, description="Other models the params name (Kind.other_models), by role"
    )
    datasets: dict[str, DatasetInput] = Field(description="By role, already resolved (eval <- test <- validation)")
    out_dir: str
    max_threads: int = 1

    def feeds(self, role: str, max_samples: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The dataset of `role` as model feeds (binding rules of engine.binding) and its labels, if any; only its
        first `max_samples` samples are read when given."""
        ds = self.datasets[role]
        arrays, labels = load_samples(Path(ds.path), ds.format, ds.label, max_samples)  # type: ignore[arg-type]
        return binding.bind(binding.plan(self.model_info.inputs, ds.summary), arrays), labels

    def summaries(self) -> dict[str, DatasetSummary]:
        return {role: d.summary for role, d in self.datasets.items()}

    def whole(self, folder: Path, progress: Callable[[float, str], None]) -> JobInputs:
        """These inputs with every model that keeps external data (a bundle) rewritten as one .onnx file in
        `folder`, for runs that hold the whole model in memory (Kind.reads_external_data False; submit refused the
        bundles over protobuf's limit, engine.bundle.fits_whole)."""
        from engine.bundle import load_whole

        def one(path: str, info: ModelInfo, name: str) -> tuple[str, ModelInfo]:
            if not info.external_data_bytes:
                return path, info
            progress(0.02, "reading the external data into one model file")
            dst = load_whole(Path(path), folder / f"{name}.whole.onnx")
            return str(dst), info.model_copy(update={"external_data_bytes": 0})

        model_path, model_info = one(self.model_path, self.model_info, "model")
        models = {
            role: ModelInput(path=p, info=i) for role, m in self.models.items() for p, i in [one(m.path, m.info, role)]
        }
        return self.model_copy(update={"model_path": model_path, "model_info": model_info, "models": models})


def resolve_roles(
    name: str, roles: tuple[str, ...], required: tuple[str, ...], given: dict[str, str]
) -> dict[str, str]:
    """Dataset roles a kind reads: where it needs `eval` and none is given, `test`, else `validation`."""
    resolved = dict(given)
    if "eval" in roles and "eval" not in resolved:
        for fallback in ("test", "validation"):
            if fallback in resolved:
                resolved["eval"] = resolved[fallback]
                break
    missing = [r for r in required if r not in resolved]
    if missing:
        stand_in = " ('test' or 'validation' stand in for 'eval')" if "eval" in missing else ""
        raise EngineError(
            ErrorCode.MISSING_DATASET, f"{name} needs a dataset for role(s) {missing}{stand_in}; given: {sorted(given)}"
        )
    return resolved


def pick_output(info: ModelInfo, requested: str | None) -> str:
    """The prediction output: the one named, else the model's first float output, else its first ZipMap output
    (scikit-learn classifiers converted with skl2onnx: their class probabilities, read as an array)."""
    if requested is not None:
        if requested not in [o.name for o in info.outputs]:
            raise EngineError(
                ErrorCode.UNKNOWN_OUTPUT,
                f"output {requested!r} is not an output of the model: {[o.name for o in info.outputs]}",
            )
        return requested
    for o in info.outputs:
        if o.elem_type in ("float32", "float64", "float16"):
            return o.name
    for o in info.outputs:
        if o.probability_map:
            return o.name
    raise EngineError(
        ErrorCode.UNKNOWN_OUTPUT, "the model has no float output; name the prediction output in params.output"
    )
