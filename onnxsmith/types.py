"""What the API returns, as pydantic models the SDK hands back. Only pydantic here: the SDK does not import the
service or the engine. Unknown fields are kept (extra="allow"), so a newer server never breaks an older SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Gt, Lt
from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Model(_Open):
    id: str
    name: str
    sha256: str
    size_bytes: int
    source_job_id: str | None = None
    created_at: datetime
    info: dict[str, Any]
    bundle_format: str | None = None  # 'tar' | 'zip': a model uploaded with its external data
    parts: list[dict[str, Any]] = []  # a bundle's files (name, sha256, size_bytes), the .onnx file first


class Dataset(_Open):
    id: str
    name: str
    kind: str
    format: str
    label: str | None = None
    sha256: str
    size_bytes: int
    created_at: datetime
    summary: dict[str, Any]


class JobState(_Open):
    id: str
    kind: str
    status: str
    progress: float
    stage: str
    model_id: str | None = None
    datasets: dict[str, str] = {}
    params: dict[str, Any] = {}
    error: dict[str, str] | None = None
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    report_url: str | None = None


class Artifact(_Open):
    id: str
    job_id: str
    role: str
    filename: str
    media_type: str
    sha256: str
    size_bytes: int


class Kind(_Open):
    """GET /v1/kinds: a job kind, its datasets and params schema, and whether a live worker can run it."""

    name: str
    description: str
    queue: str
    dataset_roles: list[str]
    required_roles: list[str]
    needs: list[str]
    runnable: str  # all | some | none | unknown (no live worker on its queue)
    live_workers: int = 0
    params_schema: dict[str, Any]


# -- params ----------------------------------------------------------------------------------------------------
class OptimizeParams(BaseModel):
    """Typed params of the `optimize` kind (the server's schema: GET /v1/kinds). Only the fields you set are sent;
    the server fills in its defaults, shown here for reference."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    drop_mode: Literal["relative", "absolute"] = "relative"
    min_output_cosine: float = Field(default=0.99, ge=-1, le=1)
    objective: Literal["latency", "size"] = "latency"
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_size_bytes: int | None = Field(default=None, gt=0)
    methods: list[Literal["simplify", "quantize", "prune", "distill"]] = ["simplify", "quantize", "prune", "distill"]
    ratios: list[Annotated[float, Gt(0), Lt(1)]] = [0.3, 0.5]
    quantize_modes: list[Literal["static", "dynamic", "fp16", "weight_only"]] = [
        "static",
        "dynamic",
        "fp16",
        "weight_only",
    ]
    distill_epochs: int = Field(default=20, ge=1, le=1000)
    max_seconds: float = Field(default=1800, gt=0)
    output: str | None = None
    batch_size: int = Field(default=1, ge=1, le=4096)
    threads: int = Field(default=1, ge=1, le=64)
    runs: int = Field(default=50, ge=5, le=10000)
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1)


# -- reports ---------------------------------------------------------------------------------------------------
class Report(_Open):
    """Every report: schema_version, kind, warnings, machine; the kind's own fields as attributes."""

    schema_version: int
    kind: str
    warnings: list[str] = []
    machine: dict[str, Any] = {}
    params: dict[str, Any] | None = None  # the params the job ran with, defaults filled in
    output_model_id: str | None = None  # set by the service when the job registered a model


class Comparison(_Open):
    size_bytes: dict[str, float]
    latency_ms: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]] | None = None
    primary_metric: str | None = None
    drop: dict[str, float] | None = None
    fidelity: list[dict[str, Any]]
    eval_samples: int


class Trial(_Open):
    index: int
    name: str
    status: str
    error: dict[str, str] | None = None
    metric: float | None = None
    drop: dict[str, float] | None = None
    cosine: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    meets: dict[str, bool] | None = None
    pareto: bool = False


class OptimizeReport(Report):
    goal: dict[str, Any]
    goal_met: bool
    fit: dict[str, Any] | None = None
    original: Trial
    trials: list[Trial]
    skipped: list[str] = []
    recommended: int
    recommended_chain: list[str]
    closest: int | None = None
    comparison: Comparison | None = None
    seconds: float

    @property
    def winner(self) -> Trial:
        """The recommended trial (it meets the goal), or the original when none beat it or nothing meets the goal."""
        return self.trials[self.recommended - 1] if self.recommended else self.original

    @property
    def closest_trial(self) -> Trial | None:
        """When the goal is not met: the trial handed back as the closest to it."""
        return self.trials[self.closest - 1] if self.closest else None


class CompareReport(Report):
    comparison: Comparison


class QuantizeReport(Report):
    mode: str
    comparison: Comparison
    handed_back: str = "quantized"  # "original": auto kept the original; the comparison shows the best attempt
    auto: dict[str, Any] | None = None


class PruneReport(Report):
    method: str
    comparison: Comparison


class DistillReport(Report):
    comparison: Comparison
    epochs_run: int
    best_epoch: int | None = None


class DiagnoseReport(Report):
    verdict: str
    summary: str
    primary_metric: str
    remedies: list[dict[str, Any]] = []


class EvaluateReport(Report):
    task: str
    sample_count: int
    metrics: dict[str, float | None]
    accuracy_ci95: list[float] | None = None


class BenchmarkReport(Report):
    input_source: str
    results: list[dict[str, Any]]


REPORT_TYPES: dict[str, type[Report]] = {
    "evaluate": EvaluateReport,
    "benchmark": BenchmarkReport,
    "optimize": OptimizeReport,
    "compare": CompareReport,
    "quantize": QuantizeReport,
    "prune": PruneReport,
    "distill": DistillReport,
    "diagnose": DiagnoseReport,
}
