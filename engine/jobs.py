"""The job-kind contract: a name, a Params model, a Report model, `run(inputs, params, progress)`, one registry.

Adding a kind: write its module (Params, Report, `validate`, `run`), register it below, add a thin Celery task
in workers/tasks.py. The engine never touches the database or the object store: the worker hands it local
files and stores what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine import binding
from engine.datasets import DatasetSummary, load_samples
from engine.errors import EngineError
from engine.inspect import ModelInfo
from engine.machine import MachineInfo

SCHEMA_VERSION = 1
Progress = Callable[[float, str], None]


class StrictParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
        default_factory=dict, description="Other models the params name (JobKind.other_models), by role"
    )
    datasets: dict[str, DatasetInput] = Field(description="By role, already resolved (eval <- test <- validation)")
    out_dir: str
    max_threads: int = 1

    def feeds(self, role: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The dataset of `role` as model feeds (binding rules of engine.binding) and its labels, if any."""
        ds = self.datasets[role]
        arrays, labels = load_samples(Path(ds.path), ds.format, ds.label)  # type: ignore[arg-type]
        return binding.bind(binding.plan(self.model_info.inputs, ds.summary), arrays), labels


class ArtifactOut(BaseModel):
    role: str
    filename: str = Field(description="A file the engine wrote in out_dir")
    media_type: str
    register_as_model: str | None = Field(
        default=None, description="For an ONNX model: register it as a model named '<original>-<this>'"
    )
    model_info: dict[str, Any] | None = Field(default=None, description="Its inspection (engine.inspect)")


class ReportBase(BaseModel):
    schema_version: int = SCHEMA_VERSION
    kind: str
    warnings: list[str] = Field(default_factory=list)
    machine: MachineInfo


class JobOutput(BaseModel):
    report: dict[str, Any]
    artifacts: list[ArtifactOut] = Field(default_factory=list)


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type[StrictParams]
    report: type[ReportBase]
    run: Callable[[JobInputs, Any, Progress], tuple[ReportBase, list[ArtifactOut]]]
    validate: Callable[[ModelInfo, dict[str, DatasetSummary], Any], None]
    roles: tuple[str, ...] = ()  # dataset roles the kind reads (after defaulting)
    required: tuple[str, ...] = ()
    queue: Literal["default", "measure"] = "default"
    threads: Callable[[Any], int] = lambda params: 1
    other_models: Callable[[Any], dict[str, str]] = lambda params: {}  # role -> model id named in the params
    validate_models: Callable[[ModelInfo, dict[str, ModelInfo], Any], None] | None = None
    # A lower bound of the job's running time from what is known at submit, or None (checked against the limit).
    estimate_seconds: Callable[[ModelInfo, dict[str, DatasetSummary], Any], float | None] | None = None
    # Optional worker capabilities (engine.machine.capabilities) the job cannot run without, e.g. {"torch"}.
    needs: Callable[[Any], set[str]] = lambda params: set()


def _registry() -> dict[str, JobKind]:
    from engine import benchmark, compare_kind, diagnose, distill, evaluate, optimize, prune, quantize

    kinds = (
        evaluate.KIND,
        benchmark.KIND,
        compare_kind.KIND,
        quantize.KIND,
        diagnose.KIND,
        prune.KIND,
        distill.KIND,
        optimize.KIND,
    )
    return {k.name: k for k in kinds}


KINDS: dict[str, JobKind] = {}


def get_kind(name: str) -> JobKind:
    if not KINDS:
        KINDS.update(_registry())
    if name not in KINDS:
        raise KeyError(name)
    return KINDS[name]


def kind_names() -> list[str]:
    get_kind("evaluate")
    return sorted(KINDS)


def resolve_roles(kind: JobKind, given: dict[str, str]) -> dict[str, str]:
    """Dataset roles a kind reads: where it needs `eval` and none is given, `test`, else `validation`."""
    resolved = dict(given)
    if "eval" in kind.roles and "eval" not in resolved:
        for fallback in ("test", "validation"):
            if fallback in resolved:
                resolved["eval"] = resolved[fallback]
                break
    missing = [r for r in kind.required if r not in resolved]
    if missing:
        raise EngineError("missing_dataset", f"{kind.name} needs a dataset for role(s) {missing}")
    return resolved


def run_in_child(kind: str, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Sandbox entry point of every job: validate, run, return {"report", "artifacts"}."""
    from engine.sandbox import report_progress

    job_kind = get_kind(kind)
    job_inputs = JobInputs.model_validate(inputs)
    job_params = job_kind.params.model_validate(params)
    report, artifacts = job_kind.run(job_inputs, job_params, report_progress)
    return JobOutput(report=report.model_dump(mode="json"), artifacts=artifacts).model_dump(mode="json")
