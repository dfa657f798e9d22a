"""What the `optimize` job tries and how it chooses: params, the trial plan, per-trial measurements, the Pareto
front over (metric, latency, size) and the recommendation. engine/optimize.py runs the plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from engine import binding
from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs, pick_output
from engine.core.kind import Ratio, ReportBase, StepSummary, StrictParams
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo, refuse_attribute_weights, refuse_non_tensor_outputs
from engine.measure.comparison import Comparison
from engine.select.goal import Goal
from engine.select.trial import Trial
from engine.select.trial import choose as pick

Method = Literal["simplify", "quantize", "prune", "distill"]
METHODS: tuple[Method, ...] = ("simplify", "quantize", "prune", "distill")
# The smallest budget worth starting: a diagnosis and one measured trial of a tiny model take about this long.
MIN_SECONDS = 15.0
# Inference throughput assumed by that floor (optimistic, so only hopeless budgets are refused).
OPTIMISTIC_MACS_PER_S = 5e9


class OptimizeParams(StrictParams):
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="The most the primary metric (accuracy, r2) may drop on eval"
    )
    drop_mode: Literal["relative", "absolute"] = Field(
        default="relative", description="max_accuracy_drop as a fraction of the original's value, or in points"
    )
    min_output_cosine: float = Field(
        default=0.99, ge=-1, le=1, description="The accuracy constraint when eval has no labels"
    )
    objective: Literal["latency", "size"] = Field(
        default="latency", description="What the recommended model minimizes (latency at batch_size, threads)"
    )
    max_latency_ms: float | None = Field(default=None, gt=0, description="Target: p50 latency at batch_size")
    max_size_bytes: int | None = Field(default=None, gt=0, description="Target: model file size")
    methods: list[Literal["simplify", "quantize", "prune", "distill"]] = Field(
        default=list(METHODS),
        min_length=1,
        description="Allowed methods. distill trains a structurally pruned student (needs prune, PyTorch on the "
        "worker and a train dataset); prune without distill keeps the pruned weights as they are",
    )
    ratios: list[Ratio] = Field(
        default=[0.3, 0.5], min_length=1, max_length=5, description="prune / distill: fractions of width removed"
    )
    quantize_modes: list[Literal["static", "dynamic", "fp16", "weight_only"]] = Field(
        default=["static", "dynamic", "fp16", "weight_only"],
        min_length=1,
        description="quantize: modes its auto search may try",
    )
    distill_epochs: int = Field(default=20, ge=1, le=1000, description="distill: most epochs (early stopping on)")
    max_seconds: float = Field(
        default=1800, gt=0, description="Time budget of all trials; a trial that cannot fit what is left is skipped"
    )
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    batch_size: int = Field(default=1, ge=1, le=4096, description="Batch size latency is measured and targeted at")
    threads: int = Field(default=1, ge=1, le=64, description="Threads for every measurement and for training")
    runs: int = Field(default=50, ge=5, le=10000, description="Timed runs of each model per trial (interleaved)")
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1)

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        return sorted(set(v))

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        return [m for m in METHODS if m in v]

    def goal(self) -> dict[str, Any]:
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "drop_mode": self.drop_mode,
            "min_output_cosine": self.min_output_cosine,
            "objective": self.objective,
            "max_latency_ms": self.max_latency_ms,
            "max_size_bytes": self.max_size_bytes,
            "latency_at": {"batch_size": self.batch_size, "threads": self.threads},
        }

    def accuracy_goal(self) -> Goal:
        return Goal(self.max_accuracy_drop, self.drop_mode, self.min_output_cosine)


@dataclass
class StepContext:
    seconds_left: float
    previous: list[StepSummary]  # the chain's earlier steps


@dataclass(frozen=True)
class Step:
    kind: str
    key: str  # unique among steps, used in folder names
    label: str
    params: Callable[[StepContext], dict[str, Any]] = field(compare=False)


class OptimizeTrial(Trial):
    """One chain of steps, measured against the original (index 0 is the original itself)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chain: list[Any] = Field(default_factory=list, exclude=True)
    error: dict[str, str] | None = None
    steps: list[StepSummary] = Field(default_factory=list, description="What each step of the chain did")
    drop: dict[str, float] | None = Field(default=None, description="Of the primary metric vs the original")
    top1_agreement: float | None = None
    latency_ms: float | None = Field(default=None, description="p50 at batch_size/threads")
    parameters: int | None = None
    macs_per_sample: int | None = None
    meets: dict[str, bool] | None = Field(default=None, description="accuracy, latency, size constraints")
    comparison: Comparison | None = Field(default=None, exclude=True)
    model_path: Path | None = Field(default=None, exclude=True)
    model_info: ModelInfo | None = Field(default=None, exclude=True)

    def measure(self, c: Comparison, info: ModelInfo, params: OptimizeParams, path: Path) -> None:
        pair = c.latency_ms[0]
        primary = c.metrics[c.primary_metric] if c.metrics and c.primary_metric else None
        predicted = pick_output(info, params.output)  # the prediction output, as every kind picks it
        fid = next((f for f in c.fidelity if f.output == predicted), c.fidelity[0])
        self.status, self.comparison, self.model_path, self.model_info = "measured", c, path, info
        self.metric = primary.candidate if primary else None
        self.drop = c.drop
        self.cosine, self.top1_agreement = fid.cosine, fid.top1_agreement
        self.latency_ms, self.speedup = pair.candidate_ms.p50, pair.speedup_p50
        self.size_bytes, self.size_ratio = c.size_bytes.candidate, c.size_bytes.ratio
        self.parameters, self.macs_per_sample = info.parameter_count, info.macs_per_sample
        self.non_finite_values = sum(f.non_finite_values for f in c.fidelity)  # inf/NaN is never accurate
        judged = params.accuracy_goal().judge(
            original=primary.original if primary else None,
            metric=self.metric,
            cosine=fid.cosine,
            non_finite=self.non_finite_values,
            labeled=primary is not None,
        )
        self.meets = _targets(self, params) | {"accuracy": judged.ok}

    @classmethod
    def original_row(cls, info: ModelInfo, path: Path, trials: list[OptimizeTrial], labeled: bool) -> OptimizeTrial:
        """The original as a point of the front: its metric and latency from the trials' comparisons."""
        measured = [t.comparison for t in trials if t.comparison is not None]
        row = cls(index=0, name="original", status="measured" if measured else "planned")
        row.size_bytes, row.size_ratio, row.speedup = path.stat().st_size, 1.0, 1.0
        row.parameters, row.macs_per_sample, row.cosine = info.parameter_count, info.macs_per_sample, 1.0
        row.drop = {"absolute": 0.0, "relative": 0.0} if labeled else None
        if measured:
            c = measured[0]
            row.latency_ms = sorted(m.latency_ms[0].original_ms.p50 for m in measured)[len(measured) // 2]
            if c.metrics and c.primary_metric:
                row.metric = c.metrics[c.primary_metric].original
        return row


def _targets(t: OptimizeTrial, params: OptimizeParams) -> dict[str, bool]:
    """A target is met only when it was measured and within its limit (an unmeasured latency meets nothing)."""
    return {
        "latency": params.max_latency_ms is None
        or (t.latency_ms is not None and t.latency_ms <= params.max_latency_ms),
        "size": params.max_size_bytes is None or (t.size_bytes is not None and t.size_bytes <= params.max_size_bytes),
    }


class OptimizeReport(ReportBase):
    kind: Literal["optimize"] = "optimize"
    goal: dict[str, Any]
    goal_met: bool = Field(description="The recommended model meets every constraint and target")
    fit: dict[str, Any] | None = Field(description="The original's fit diagnosis (diagnose job), if train+validation")
    original: OptimizeTrial
    trials: list[OptimizeTrial]
    skipped: list[str] = Field(description="Methods not tried, and why")
    recommended: int = Field(
        description="Index of the recommended trial, which meets the goal; 0 = keep the original, or nothing meets it"
    )
    recommended_chain: list[str]
    closest: int | None = Field(
        default=None, description="When nothing meets the goal: the trial closest to it (handed back as 'closest')"
    )
    recommended_model: dict[str, Any] | None = Field(
        description="The file handed back and registered as a model (<model>-optimized, or <model>-closest when the "
        "goal is not met); null when the original is kept"
    )
    comparison: Comparison | None = Field(description="The full comparison block of the trial handed back")
    seconds: float
    config: dict[str, Any]


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: OptimizeParams) -> None:
    refuse_attribute_weights(
        info, ErrorCode.UNSUPPORTED_OP, "none of optimize's methods (simplify, quantize, prune, distill) applies"
    )
    refuse_non_tensor_outputs(info, "optimize (its first step, simplify)")
    for role in ("train", "validation", "test", "calibration", "eval"):
        if role in summaries:
            if summaries[role].kind != "samples":
                raise EngineError(ErrorCode.INCOMPATIBLE_DATA, f"the {role} dataset is a training history, not samples")
            binding.plan(info.inputs, summaries[role])
    pick_output(info, params.output)
    n = min(summaries["eval"].sample_count, params.eval_max_samples or 1 << 62)
    floor = MIN_SECONDS + 4 * n * (info.macs_per_sample or 0) / OPTIMISTIC_MACS_PER_S
    if params.max_seconds < floor:
        raise EngineError(
            ErrorCode.BUDGET_TOO_SMALL,
            f"max_seconds {params.max_seconds:g} cannot run anything: a diagnosis and one measured trial on "
            f"{n} eval samples take at least about {floor:,.0f} s",
        )


# -- the plan --------------------------------------------------------------------------------------------------
def _budget(ctx: StepContext, params: OptimizeParams) -> dict[str, Any]:
    """quantize's accuracy goal: what is left of the job's budget after the chain's earlier steps."""
    start = ctx.previous[0].original_metric if ctx.previous else None
    if start is None:
        return {"max_accuracy_drop": params.max_accuracy_drop, "drop_mode": params.drop_mode}
    total = params.max_accuracy_drop * abs(start) if params.drop_mode == "relative" else params.max_accuracy_drop
    spent = sum(s.drop_absolute or 0.0 for s in ctx.previous)
    return {"max_accuracy_drop": min(1.0, max(0.0, total - spent)), "drop_mode": "absolute"}


def plan(
    inputs: JobInputs, params: OptimizeParams, *, has_torch: bool, labeled: bool
) -> tuple[list[OptimizeTrial], list[str]]:
    """The trials, in the order they run (cheap first), and the methods left out with the reason."""
    measure = {"batch_sizes": [params.batch_size], "threads": [params.threads], "runs": 10, "warmup_runs": 2}
    common = {"output": params.output, "eval_max_samples": params.eval_max_samples}
    methods, skipped = set(params.methods), []
    simplify = Step("prune", "simplify", "simplify", lambda ctx: {"method": "simplify", **common, **measure})
    quantize = Step(
        "quantize",
        "quantize",
        "quantize (auto)",
        lambda ctx: {
            "mode": "auto",
            **_budget(ctx, params),
            "min_output_cosine": params.min_output_cosine,
            "objective": params.objective,
            "auto_modes": params.quantize_modes,
            "max_seconds": max(1.0, min(900.0, 0.8 * ctx.seconds_left)),
            "error_table": False,
            "trial_runs": max(10, min(30, params.runs)),
            "trial_batch_size": params.batch_size,  # the batch optimize's latency goal is measured at
            **common,
            **measure,
        },
    )
    train = inputs.datasets.get("train")
    distill = "distill" in methods and "prune" in methods
    if "distill" in methods and "prune" not in methods:
        skipped.append("distill: its student is the model structurally pruned, and prune is not allowed")
    elif distill and not has_torch:
        skipped.append("distill: PyTorch is not installed on this worker (the train extra); pruned without training")
        distill = False
    elif distill and train is None:
        skipped.append("distill: no train dataset; pruned without training")
        distill = False

    def cut(r: float) -> Step:
        if distill:
            labels = train is not None and train.summary.label is not None
            return Step(
                "distill",
                f"distill-{r:g}",
                f"prune {r:.0%} + distill",
                lambda ctx: {
                    "student": "auto",
                    "ratio": r,
                    "epochs": params.distill_epochs,
                    "alpha": 0.5 if labels else 0.0,
                    "monitor": "val_loss" if "validation" in inputs.datasets else "loss",
                    "threads": params.threads,
                    "output": params.output,
                    "batch_sizes": [params.batch_size],
                    "runs": 10,
                },
            )
        return Step(
            "prune",
            f"prune-{r:g}",
            f"prune {r:.0%}",
            lambda ctx: {"method": "structured", "ratio": r, **common, **measure},
        )

    base = (simplify,) if "simplify" in methods else ()
    chains: list[tuple[Step, ...]] = []
    if base:
        chains.append(base)
    if "quantize" in methods:
        chains.append((*base, quantize))
    if "prune" in methods:
        for r in params.ratios:
            chains.append((*base, cut(r)))
            if "quantize" in methods:
                chains.append((*base, cut(r), quantize))
    if not labeled:
        skipped.append("no labels in eval: the accuracy constraint is min_output_cosine on the prediction output")
    trials = [
        OptimizeTrial(index=i + 1, name=" → ".join(s.label for s in c), chain=list(c)) for i, c in enumerate(chains)
    ]
    return trials, skipped


# -- the choice ------------------------------------------------------------------------------------------------
@dataclass
class Choice:
    trial: OptimizeTrial | None  # None: keep the original
    goal_met: bool
    warnings: list[str]


def judge_original(original: OptimizeTrial, params: OptimizeParams) -> None:
    """The original meets the accuracy goal by definition; the latency and size targets as measured."""
    original.meets = _targets(original, params) | {"accuracy": True}


def feasible(t: Trial) -> bool:
    """The row meets every constraint (accuracy, latency, size)."""
    meets: dict[str, bool] | None = getattr(t, "meets", None)
    return meets is not None and bool(meets) and all(meets.values())


def choose(original: OptimizeTrial, trials: list[OptimizeTrial], params: OptimizeParams) -> Choice:
    """The shared choice (engine.select.trial.choose) with the original taking part when it meets the constraints
    (judged here; the kind judges it before marking the front too)."""
    judge_original(original, params)
    measured = [t for t in trials if t.status == "measured"]
    ok = [t for t in measured if feasible(t)]
    if ok or feasible(original):
        chosen = pick(ok, params.objective, original if feasible(original) else None)
        if chosen is None:
            return Choice(
                None,
                True,
                [
                    f"no trial beat the original on {params.objective} within the constraints: "
                    "keep the original (nothing registered)"
                ],
            )
        return Choice(chosen, True, [])
    rows = [*measured, original]
    closest = min(rows, key=lambda t: _shortfall(t, params))
    words = ", ".join(k for k, v in (closest.meets or {}).items() if not v)
    warning = (
        f"no trial meets every constraint; the closest is {closest.name} (misses: {words}). "
        "It is reported as goal_met: false" + ("" if closest is original else " and handed back so it can be inspected")
    )
    return Choice(None if closest is original else closest, False, [warning])


def _shortfall(t: OptimizeTrial, params: OptimizeParams) -> float:
    """How far a row is from meeting everything, each constraint relative to its own limit."""
    goal = params.accuracy_goal()
    if t.drop is not None:
        s = goal.shortfall(drop=t.drop[params.drop_mode], cosine=t.cosine, labeled=True)
    else:
        s = goal.shortfall(drop=None, cosine=t.cosine, labeled=False) if t.cosine is not None else 0.0
    if params.max_latency_ms is not None and t.latency_ms is not None:
        s += max(0.0, t.latency_ms / params.max_latency_ms - 1)
    if params.max_size_bytes is not None and t.size_bytes is not None:
        s += max(0.0, t.size_bytes / params.max_size_bytes - 1)
    return s
