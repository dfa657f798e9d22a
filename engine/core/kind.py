"""The job-kind contract: `Kind[P, R]` with a name, a Params model, a Report model, dataset roles, a queue, cheap
checks for submit (`validate`, `validate_models`, `estimate_seconds`), `run(ctx, params)` and `summary(report)`.

`Kind.execute` is the one place that does what every run shares: the machine the run measured on (with the load
average before and after), the warnings the kind collected, the effective params echoed into the report, and a
private scratch folder that is removed afterwards. A kind implements only its own work.

A new kind is a folder under engine/kinds/ with a subclass of Kind and one line in engine/registry.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field

from engine.core.inputs import JobInputs
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo
from engine.machine import MachineInfo, load_average, machine_info
from engine.render import render_page

SCHEMA_VERSION = 1
Progress = Callable[[float, str], None]
Queue = Literal["default", "measure"]
QUEUES: tuple[Queue, ...] = ("default", "measure")  # measure: concurrency 1, so two timings never share the CPU


class StrictParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounds shared by every kind's params, in the types so that the OpenAPI schema says what is refused.
# (annotated_types' constraints, not Field(): they compare equal, so the SDK's mirror of a params model is checkable)
BatchSize = Annotated[int, Ge(1), Le(4096)]
ThreadCount = Annotated[int, Ge(1), Le(256)]
Ratio = Annotated[float, Gt(0), Lt(1)]


class ReportBase(BaseModel):
    schema_version: int = SCHEMA_VERSION
    kind: str
    warnings: list[str] = Field(default_factory=list)
    machine: MachineInfo | None = Field(
        default=None, description="Where the job ran, with the load average before and after (filled by Kind)"
    )
    params: dict[str, Any] | None = Field(
        default=None, description="The params the job ran with, defaults filled in (filled by Kind)"
    )


class ArtifactOut(BaseModel):
    role: str
    filename: str = Field(description="A file the engine wrote in out_dir")
    media_type: str
    register_as_model: str | None = Field(
        default=None, description="For an ONNX model: register it as a model named '<original>-<this>'"
    )
    model_info: dict[str, Any] | None = Field(default=None, description="Its inspection (engine.inspect)")


class JobOutput(BaseModel):
    """What crosses the sandbox boundary: the report as JSON and the files to store."""

    report: dict[str, Any]
    artifacts: list[ArtifactOut] = Field(default_factory=list)


class StepSummary(BaseModel):
    """One kind's run as a step of another (optimize's chains): the facts a reader needs without its report."""

    step: str
    kind: str
    seconds: float
    original_metric: float | None = None
    metric: float | None = None
    drop_absolute: float | None = None
    size_ratio: float | None = None
    warnings: list[str] = Field(default_factory=list)
    detail: str = ""


P = TypeVar("P", bound=StrictParams)
R = TypeVar("R", bound=ReportBase)


@dataclass
class Outcome(Generic[R]):
    report: R
    artifacts: list[ArtifactOut] = field(default_factory=list)


KindLookup = Callable[[str], "Kind[Any, Any]"]


@dataclass
class RunContext:
    """What a run gets besides its params: inputs, progress, a list to add warnings to, a private scratch folder
    (removed after the run) and the other kinds, by name (a kind that chains kinds uses them; it never imports them).
    """

    inputs: JobInputs
    progress: Progress
    scratch: Path
    kinds: KindLookup
    machine: MachineInfo
    warnings: list[str] = field(default_factory=list)

    @property
    def info(self) -> ModelInfo:
        return self.inputs.model_info

    @property
    def out_dir(self) -> Path:
        return Path(self.inputs.out_dir)


class Kind(ABC, Generic[P, R]):
    """One job kind. Subclasses set the class attributes and implement `run`; the rest has defaults."""

    name: str
    Params: type[P]
    Report: type[R]
    roles: tuple[str, ...] = ()  # dataset roles the kind reads (after defaulting)
    required: tuple[str, ...] = ()
    queue: Queue = "default"
    template: str | None = "report.html"  # beside the kind's module; None: the generic page
    external_data: bool = False  # runs on models whose weights live in external files (bundles: engine.bundle)

    @property
    def description(self) -> str:
        """The first paragraph of the kind's class docstring, else of its module's (GET /v1/kinds shows it)."""
        doc = type(self).__doc__ or sys.modules[type(self).__module__].__doc__ or ""
        doc = doc.strip().split("\n\n")[0]
        return " ".join(doc.split())

    # -- at submit (the API process): cheap and bounded, no tensors built, no model loaded --------------------
    def threads(self, params: P) -> int:
        return 1

    def reads_external_data(self, params: P) -> bool:
        """Whether this run reads a bundle's data files where they lie; otherwise `execute` hands it the bundle
        rewritten as one model file (a kind with `external_data` may still need that for some params)."""
        return self.external_data

    def needs(self, params: P) -> set[str]:
        """Optional worker capabilities (engine.machine.capabilities) the job cannot run without, e.g. {"torch"}."""
        return set()

    def other_models(self, params: P) -> dict[str, str]:
        """Other models the params name: role -> model id (submit checks them, the worker downloads them)."""
        return {}

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: P) -> None:
        """Raise EngineError (a 4xx code) when the request cannot work with these inputs."""

    def validate_models(self, info: ModelInfo, others: dict[str, ModelInfo], params: P) -> None:
        """Check the other models against the job's model."""

    def estimate_seconds(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: P) -> float | None:
        """A lower bound of the running time from what is known at submit, or None (checked against the limit)."""
        return None

    def budget_seconds(self, params: P) -> float | None:
        """The params' own time budget (a search's max_seconds), checked against the job time limit at submit."""
        return None

    def with_budget(self, params: P, seconds: float) -> P:
        """The params with their time budget set to `seconds` (a default above a deployment's limit is shrunk)."""
        return params

    # -- in the worker's child ------------------------------------------------------------------------------
    @abstractmethod
    def run(self, ctx: RunContext, params: P) -> Outcome[R]:
        """Do the work; add warnings to ctx.warnings; write artifacts into ctx.out_dir, scratch into ctx.scratch."""

    def summary(self, report: R, step: str, seconds: float) -> StepSummary:
        """This kind's run as a step of a chain: the comparison block's numbers (if it has one) and `detail`."""
        c = getattr(report, "comparison", None)
        metric = c.metrics.get(c.primary_metric) if c is not None and c.metrics and c.primary_metric else None
        return StepSummary(
            step=step,
            kind=self.name,
            seconds=round(seconds, 3),
            original_metric=metric.original if metric else None,
            metric=metric.candidate if metric else None,
            drop_absolute=(c.drop or {}).get("absolute") if c is not None else None,
            size_ratio=c.size_bytes.ratio if c is not None else None,
            warnings=report.warnings[:5],
            detail=self.detail(report),
        )

    def detail(self, report: R) -> str:
        """One line on what this run did, for summaries."""
        return ""

    # -- the report page ------------------------------------------------------------------------------------
    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        """The page's inline SVG charts, by name (the kind's template shows them as charts.<name>)."""
        return {}

    def render(self, report: dict[str, Any], job: dict[str, Any]) -> str:
        """The report as an HTML page: `template` from the kind's folder, else the generic page."""
        module = sys.modules[type(self).__module__].__file__
        folder = Path(module).parent if module else None
        return render_page(report, job, folder=folder, template=self.template, charts=self.charts(report))

    def execute(self, inputs: JobInputs, params: P, progress: Progress, kinds: KindLookup) -> Outcome[R]:
        """Run with the shared set-up: machine and load, warnings, effective params, a private scratch folder."""
        machine = machine_info()
        Path(inputs.out_dir).mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.name}-scratch-", dir=inputs.out_dir))
        try:
            if not self.reads_external_data(params):  # a bundle handed over as one file (it fits: checked at submit)
                inputs = inputs.whole(scratch, progress)
            ctx = RunContext(inputs=inputs, progress=progress, scratch=scratch, kinds=kinds, machine=machine)
            outcome = self.run(ctx, params)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        machine.load_average_1m_after = load_average()
        report = outcome.report
        report.machine = machine
        report.warnings = [*ctx.warnings, *(w for w in report.warnings if w not in ctx.warnings)]
        report.params = params.model_dump(mode="json")
        return outcome


AnyKind = Kind[Any, Any]


def kind_map(kinds: Mapping[str, AnyKind]) -> KindLookup:
    def lookup(name: str) -> AnyKind:
        return kinds[name]

    return lookup
