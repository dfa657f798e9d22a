"""The `optimize` job kind: one call that diagnoses the original, tries the compressions that fit it, measures
every result against the original on one harness and hands back the best model that meets the constraints.

Trials are chains of the single-kind engines, run one after another inside this job (never as other jobs: with
one worker that would deadlock): `prune` simplify, `quantize` auto, `prune` structured at `ratios`, `distill`
(prune + distill at a ratio, when PyTorch and train data are there), and their chains
(simplify -> prune + distill -> quantize). Each chain step calls the kind's own `run` on the previous step's
output; a step shared by two chains runs once. Every trial's final model is then measured against the original
with the shared comparison on the eval data (interleaved latency at `batch_size`/`threads`), so all trials compare
alike; the front and the choice are the shared ones (engine.select). The plan is in plan.py; this module runs it.
The other kinds come from the run context by name: this kind imports none of them.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import EngineError, ErrorCode
from engine.core.inputs import JobInputs
from engine.core.kind import ArtifactOut, Kind, KindLookup, Outcome, Progress, RunContext, StepSummary
from engine.datasets import DatasetSummary
from engine.inspect import ModelInfo, check_and_inspect
from engine.kinds.optimize.plan import (
    OptimizeParams,
    OptimizeReport,
    OptimizeTrial,
    Step,
    StepContext,
    choose,
    feasible,
    judge_original,
    plan,
    validate,
)
from engine.machine import capabilities
from engine.measure.comparison import compare_with_params
from engine.measure.data import EvalData, eval_data
from engine.runtime import fixed_batch
from engine.select.trial import mark_pareto

log = logging.getLogger("onnxsmith.optimize")


@dataclass(frozen=True)
class Timing:
    """The comparison timing every trial is measured with (engine.measure.comparison.TimingParams)."""

    output: str | None
    batch_sizes: list[int]
    threads: list[int] | None
    runs: int
    warmup_runs: int


class _Runner:
    """Runs chain steps, each once (a prefix shared by two chains is reused), in per-step folders under `root`."""

    def __init__(
        self, inputs: JobInputs, params: OptimizeParams, started: float, root: Path, kinds: KindLookup
    ) -> None:
        self.inputs, self.params, self.started, self.root, self.kinds = inputs, params, started, root, kinds
        # chain prefix -> (model file, step summary, its inspection) or the step's error
        self.done: dict[tuple[str, ...], tuple[Path, StepSummary, ModelInfo] | EngineError] = {}
        self.summaries_so_far: list[StepSummary] = []

    def left(self) -> float:
        return self.params.max_seconds - (time.monotonic() - self.started)

    def model(self, chain: list[Step], progress: Progress) -> tuple[Path, list[StepSummary], ModelInfo]:
        """The model at the end of `chain`, the summaries of its steps and its inspection; raises the first failed
        step's error. A step's failure is remembered like its success, so chains sharing it do not run it again."""
        path, info = Path(self.inputs.model_path), self.inputs.model_info
        summaries: list[StepSummary] = []
        for i, step in enumerate(chain):
            key = tuple(s.key for s in chain[: i + 1])
            if key not in self.done:
                self.summaries_so_far = list(summaries)

                def part(f: float, stage: str, i: int = i, label: str = step.label) -> None:
                    # this step's share of the trial; the step named only when the trial has several (the trial's
                    # name already is the step's when it has one)
                    progress((i + f) / len(chain), f"{label}: {stage}" if len(chain) > 1 else stage)

                try:
                    if self.left() <= 0:
                        raise EngineError(ErrorCode.OVER_BUDGET, "the time budget was used up before this step")
                    self.done[key] = self._run_step(step, path, info, len(self.done), part)
                except EngineError as exc:
                    self.done[key] = exc
                except Exception as exc:  # a bug in one step: reported with the trials that need it, logged
                    log.error("optimize step %s failed:\n%s", step.label, traceback.format_exc())
                    self.done[key] = EngineError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            result = self.done[key]
            if isinstance(result, EngineError):
                raise EngineError(result.code, f"step {step.label}: {result.detail}")
            path, summary, info = result
            summaries.append(summary)
        return path, summaries, info

    def _run_step(
        self, step: Step, source: Path, info: ModelInfo, n: int, progress: Progress
    ) -> tuple[Path, StepSummary, ModelInfo]:
        kind = self.kinds(step.kind)
        out = self.root / f"step-{n}-{step.key}"
        out.mkdir(parents=True, exist_ok=True)
        sub = JobInputs(
            model_path=str(source),
            model_info=info,
            datasets=self.inputs.datasets,
            out_dir=str(out),
            max_threads=self.inputs.max_threads,
        )
        params = kind.Params.model_validate(step.params(StepContext(self.left(), self.summaries_so_far)))
        summaries = self.inputs.summaries()
        kind.validate(sub.model_info, summaries, params)
        estimate = kind.estimate_seconds(sub.model_info, summaries, params)
        if estimate is not None and estimate > self.left():
            raise EngineError(
                ErrorCode.OVER_BUDGET,
                f"needs about {estimate:,.0f} s (optimistic) and {self.left():,.0f} s are left",
            )
        t0 = time.monotonic()
        outcome = kind.execute(sub, params, progress, self.kinds)
        produced = [a for a in outcome.artifacts if a.role == "model"]
        if not produced:
            raise EngineError(ErrorCode.NO_MODEL, f"{step.kind} produced no model: {kind.detail(outcome.report)}")
        summary = kind.summary(outcome.report, step.label, time.monotonic() - t0)
        path = out / produced[0].filename
        # the kind inspected what it produced (ArtifactOut.model_info); inspect only if it did not say
        made = produced[0].model_info
        return path, summary, ModelInfo.model_validate(made) if made else check_and_inspect(str(path))


def _same_bytes(a: Path | None, b: Path) -> bool:
    return a is not None and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _diagnose(ctx: RunContext, progress: Progress) -> dict[str, Any] | None:
    """The original's fit (the diagnose kind with its defaults), as context for the trials."""
    inputs, warnings = ctx.inputs, ctx.warnings
    if not {"train", "validation"} <= set(inputs.datasets):
        warnings.append("no fit diagnosis: it needs labeled train and validation datasets")
        return None
    kind = ctx.kinds("diagnose")
    sub = inputs.model_copy(update={"out_dir": str(ctx.scratch / "diagnose")})
    try:
        report = kind.execute(sub, kind.Params(), progress, ctx.kinds).report
    except EngineError as exc:
        warnings.append(f"no fit diagnosis: {exc.detail}")
        return None
    except Exception as exc:  # the diagnosis is context for the trials, not a reason to fail the job
        log.error("optimize: diagnosis failed:\n%s", traceback.format_exc())
        warnings.append(f"no fit diagnosis: it failed ({type(exc).__name__}: {exc})")
        return None
    r = report.model_dump(mode="json")
    fit = {
        "verdict": r["verdict"],
        "summary": r["summary"],
        "primary_metric": r["primary_metric"],
        "splits": {k: v["metrics"].get(r["primary_metric"]) for k, v in r["splits"].items()},
        "remedies": [{"action": m["action"], "why": m["why"]} for m in r["remedies"][:4]],
    }
    if r["verdict"] in ("overfit", "underfit"):
        warnings.append(
            f"the original model is diagnosed {r['verdict']}: {r['summary']} Fix the model before compressing it "
            f"(first remedy: {r['remedies'][0]['action'] if r['remedies'] else 'see the diagnose job'})"
        )
    return fit


class Optimize(Kind[OptimizeParams, OptimizeReport]):
    name = "optimize"
    Params = OptimizeParams
    Report = OptimizeReport
    roles = ("train", "validation", "test", "calibration", "eval", "history")
    required = ("eval",)
    queue = "measure"

    def charts(self, report: dict[str, Any]) -> dict[str, Any]:
        from engine.kinds.optimize.charts import charts

        return charts(report)

    def threads(self, params: OptimizeParams) -> int:
        return params.threads

    def budget_seconds(self, params: OptimizeParams) -> float | None:
        return params.max_seconds

    def with_budget(self, params: OptimizeParams, seconds: float) -> OptimizeParams:
        return params.model_copy(update={"max_seconds": seconds})

    def validate(self, info: ModelInfo, summaries: dict[str, DatasetSummary], params: OptimizeParams) -> None:
        validate(info, summaries, params)

    def run(self, ctx: RunContext, params: OptimizeParams) -> Outcome[OptimizeReport]:
        started = time.monotonic()
        inputs, info, progress = ctx.inputs, ctx.info, ctx.progress
        progress(0.0, "diagnosing the original's fit")
        fit = _diagnose(ctx, lambda f, s: progress(0.1 * f, f"diagnose: {s}"))

        forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
        evaluation = eval_data(inputs, params.eval_max_samples, forced or 64, ctx.warnings)
        trials, skipped = plan(inputs, params, has_torch="torch" in capabilities(), labeled=evaluation.labeled)
        runner = _Runner(inputs, params, started, ctx.scratch / "trials", ctx.kinds)
        for i, trial in enumerate(trials):
            _run_trial(ctx, runner, trial, evaluation, params, (0.1 + 0.85 * i / len(trials), len(trials)))

        progress(0.95, "choosing")
        original = OptimizeTrial.original_row(info, Path(inputs.model_path), trials, evaluation.labeled)
        judge_original(original, params)
        mark_pareto([original, *trials], feasible)
        choice = choose(original, trials, params)
        ctx.warnings.extend(choice.warnings)
        if choice.trial is not None and _same_bytes(choice.trial.model_path, Path(inputs.model_path)):
            ctx.warnings.append(
                f"the best trial ({choice.trial.name}) left the model byte for byte unchanged: keep the original"
            )
            choice.trial = None
        artifacts: list[ArtifactOut] = []
        handed_back = None
        if choice.trial is not None and choice.trial.model_path is not None:
            # a model that meets the goal is "optimized"; the closest one when nothing does is "closest", never a win
            role = "optimized" if choice.goal_met else "closest"
            dst = ctx.out_dir / f"{role}.onnx"
            shutil.copyfile(choice.trial.model_path, dst)
            handed_back = {"filename": dst.name, "size_bytes": dst.stat().st_size, "meets_goal": choice.goal_met}
            made = choice.trial.model_info
            artifacts.append(
                ArtifactOut(
                    role="model",
                    filename=dst.name,
                    media_type="application/octet-stream",
                    register_as_model=role,
                    model_info=made.model_dump(mode="json") if made else None,  # same bytes, inspected
                )
            )
        winner = choice.trial if choice.goal_met else None
        closest = None if choice.goal_met else choice.trial
        timed = next((t.comparison for t in [choice.trial, *trials] if t is not None and t.comparison), None)
        goal = params.goal()
        if timed is not None:  # what the timings really used (a fixed-batch model is timed at its own batch)
            first = timed.latency_ms[0]
            goal["latency_at"] = {"batch_size": first.batch_size, "threads": first.threads}
        report = OptimizeReport(
            goal=goal,
            goal_met=choice.goal_met,
            fit=fit,
            original=original,
            trials=trials,
            skipped=skipped,
            recommended=winner.index if winner else 0,
            recommended_chain=[s.label for s in winner.chain] if winner else [],
            closest=closest.index if closest else None,
            recommended_model=handed_back,
            comparison=choice.trial.comparison if choice.trial else None,
            seconds=round(time.monotonic() - started, 3),
            config=params.model_dump(mode="json"),
        )
        progress(1.0, "done")
        return Outcome(report, artifacts)


def _run_trial(
    ctx: RunContext,
    runner: _Runner,
    trial: OptimizeTrial,
    evaluation: EvalData,
    params: OptimizeParams,
    share: tuple[float, int],
) -> None:
    """Make the trial's model (its chain) and measure it against the original; failures are recorded on it."""
    lo, n = share
    hi = lo + 0.85 / n
    name = f"{trial.index}/{n} {trial.name}"

    def sub(f: float, stage: str) -> None:
        ctx.progress(lo + (hi - lo) * f, f"trial {name}: {stage}")

    timing = Timing(params.output, [params.batch_size], [params.threads], params.runs, params.warmup_runs)
    t0 = time.monotonic()
    try:
        path, steps, made = runner.model(trial.chain, lambda f, s: sub(0.8 * f, s))
        trial.steps = steps
        if runner.left() <= 0:
            raise EngineError(ErrorCode.OVER_BUDGET, "the time budget was used up before this trial was measured")
        comparison = compare_with_params(
            Path(ctx.inputs.model_path), path, ctx.inputs, evaluation, timing, lambda f, s: sub(0.8 + 0.2 * f, s)
        )
        trial.measure(comparison, made, params, path)
    except EngineError as exc:
        trial.status = "skipped" if exc.code == ErrorCode.OVER_BUDGET else "failed"
        trial.error = {"code": exc.code.value, "detail": exc.detail}
    except Exception as exc:  # a trial's bug must not fail the whole job: reported, logged with its traceback
        log.error("optimize trial %s failed:\n%s", trial.name, traceback.format_exc())
        trial.status, trial.error = (
            "failed",
            {"code": ErrorCode.INTERNAL.value, "detail": f"{type(exc).__name__}: {exc}"},
        )
    trial.seconds = round(time.monotonic() - t0, 3)


KIND = Optimize()
