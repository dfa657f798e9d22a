"""`quantize` with `mode=auto`: search for the configuration that meets an accuracy goal with the best latency
(or size), measuring every trial on this machine.

1. Candidates that fit the model (candidates.py): static QDQ with U8S8 and S8S8 per-channel and U8S8 per-tensor
   for convolutional graphs; for MatMul-heavy (transformer-like) graphs dynamic MatMul/Gemm quantization,
   per-channel first, with the embedding tables (Gather) in int8 too when the model has large ones, and after
   ORT's transformer fusion (Attention, SkipLayerNormalization...; used only when the fused graph computes the
   same outputs); fp16 (a latency candidate only on a CPU with native fp16 arithmetic, always one for objective
   size); weight-only 4-bit (MatMulNBits, RTN and HQQ) for objective size. Static candidates need calibration
   data (the `calibration` dataset, else `train`).
2. Each trial is quantized, then measured against the original on the `eval` dataset (the goal: the task metric
   with labels, else fidelity on what the user consumes, engine.measure.fidelity) and timed interleaved with the
   original at `trial_batch_size`, 1 thread (the latency objective: the speed-up ratio).
3. While the budget lasts, the best-objective static or dynamic trial that misses the goal is repaired: the
   nodes where the error grows most (SQNR of the node's input minus SQNR of its output: static on calibration
   samples with ORT's qdq_loss_debug, dynamic on eval samples) are left in float, 1, 2, 4, ... at a time, never
   all of them (that would be the original again). An fp16 trial whose outputs overflow is retried with the
   overflowing nodes (float32 values beyond fp16's range) kept in float32.
4. The chosen trial is the best objective among those that meet the goal, on their Pareto front, and measurably
   better than the original (engine.select.trial.choose: objective values within the tie band count as equal,
   the better metric wins). When no trial is, the original is kept: nothing is handed back as a model, the
   report says so (goal_met false) and compares the best attempt (the best trial that meets the goal, else the
   closest to it), which can be downloaded as an artifact.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import Progress
from engine.inspect import ModelInfo
from engine.kinds.quantize.calibration import Reader
from engine.kinds.quantize.candidates import candidates, embedding_tables
from engine.kinds.quantize.modes import fuse_transformer, pre_process, quantize_model
from engine.kinds.quantize.nodes import damaged_nodes, name_nodes, overflowing_nodes
from engine.kinds.quantize.params import QuantizeParams
from engine.kinds.quantize.sqnr import activation_sqnr, shared_tensor_sqnr
from engine.machine import capabilities, fp16_native
from engine.measure.data import EvalData, feeds_for, repeat_to
from engine.measure.fidelity import FidelitySpec, default_spec, measure
from engine.measure.latency import interleaved_latency
from engine.measure.metrics import PRIMARY, Predictions
from engine.runtime import make_session, run_batched
from engine.select.goal import Goal
from engine.select.trial import TIES, Trial, best, choose, front, mark_pareto

FUSION_MIN_COSINE = 0.9999  # the fused graph must compute the same thing (float reassociation only)
REPAIR_SAMPLES = 16


class QuantizeTrial(Trial):
    """One configuration tried: the shared Trial axes plus what was quantized and how it was judged."""

    mode: str
    config: dict[str, Any] = Field(description="The quantize params of this trial (mode-specific)")
    refines: int | None = Field(default=None, description="The trial this one repairs (node exclusion, fp16 block)")
    error: str | None = None
    original_p50_ms: float | None = Field(default=None, description="At timed_at, interleaved with the trial")
    p50_ms: float | None = None
    drop: float | None = Field(default=None, description="Drop of the metric in the goal's terms (accuracy goals)")
    cosine_min: float | None = Field(default=None, description="Per-sample cosine of the compared output, worst sample")
    top1_agreement: float | None = Field(default=None, description="Share of samples whose top-1 class agrees")
    top5_agreement: float | None = Field(default=None, description="Original top-1 class within the trial's top 5")
    meets_goal: bool = False
    quantization_seconds: float | None = None


class AutoSearch(BaseModel):
    goal: str = Field(description="The goal in words, with its numbers")
    goal_metric: str = Field(description="accuracy, r2, top1_agreement or cosine")
    fidelity: dict[str, Any] = Field(
        default_factory=dict, description="What fidelity compares: output, pooling, mask input, and why"
    )
    original_metric: float | None
    objective: Literal["latency", "size"]
    trials: list[QuantizeTrial]
    chosen: int | None = Field(description="Index of the trial handed back; null when the original is kept")
    goal_met: bool = Field(description="A trial met the goal and beat the original on the objective: it is handed back")
    kept_original: bool = Field(default=False, description="No trial improved the objective within the goal")
    best_attempt: int | None = Field(
        default=None,
        description="The trial the report compares: the chosen one, else the best that meets the goal, else the "
        "closest to it",
    )
    verdict: str = Field(default="", description="The outcome in words")
    stopped_because: str = Field(description="Why the search ended: all candidates tried, trials or time budget")
    timed_at: dict[str, int] = Field(
        default_factory=dict, description="The batch size and threads every trial was timed at (the latency objective)"
    )
    skipped: list[str] = Field(default_factory=list, description="Candidates not tried, and why")


class Search:
    """One auto search; `run()` returns the report block and the path of the chosen model and its trial."""

    def __init__(
        self,
        *,
        src: Path,
        info: ModelInfo,
        params: QuantizeParams,
        reader: Reader | None,
        evaluation: EvalData,
        prediction_output: str,
        batch: int,
        work: Path,
        progress: Progress,
    ) -> None:
        self.src, self.info, self.params, self.reader = src, info, params, reader
        self.evaluation, self.output, self.batch, self.work, self.progress = (
            evaluation, prediction_output, batch, work, progress
        )  # fmt: skip
        self.goal = Goal(
            max_accuracy_drop=params.max_accuracy_drop,
            drop_mode=params.drop_mode,
            min_output_cosine=params.min_output_cosine,
            cosine_too="min_output_cosine" in params.model_fields_set,
            min_top1_agreement=params.min_top1_agreement,
        )
        self.spec: FidelitySpec = default_spec(info, prediction_output, params.pooling, params.mask_input)
        self.sources: dict[str, Path | str] = {"original": src}  # by preparation: original, pre_process, fuse
        self.fused_ops: dict[str, int] = {}
        self.trials: list[QuantizeTrial] = []
        self.paths: dict[int, Path] = {}
        self.started = time.perf_counter()
        ref = make_session(str(src), 1)
        self.reference = run_batched(ref, feeds_for(ref, evaluation.feeds), prediction_output, 256)
        self.use_labels = evaluation.labeled
        self.metric_name = self.goal.metric_name(PRIMARY[evaluation.task] if evaluation.task else None, self.use_labels)
        self.original_metric = self._metric(self.reference) if self.use_labels else 1.0
        self.original = QuantizeTrial(  # the original as a contender of the choice: a trial must beat it
            index=-1, name="original", mode="none", config={}, status="measured", metric=self.original_metric,
            cosine=1.0, speedup=1.0, size_bytes=src.stat().st_size, size_ratio=1.0, meets_goal=True,
        )  # fmt: skip
        self.timing_feeds = repeat_to(evaluation.feeds, batch)

    # -- the goal -------------------------------------------------------------------------------------------
    def _metric(self, out: np.ndarray) -> float | None:
        e = self.evaluation
        assert e.task is not None and e.labels is not None
        return Predictions(e.task, out, e.labels, e.summary).metrics().get(self.metric_name)

    def _judge(self, trial: QuantizeTrial, out: np.ndarray) -> None:
        fid = measure(self.spec, self.reference, out, self.evaluation.feeds)
        trial.cosine, trial.cosine_min, trial.non_finite_values = fid.cosine_mean, fid.cosine_min, fid.non_finite_values
        trial.top1_agreement, trial.top5_agreement = fid.top1_agreement, fid.top5_agreement
        judged = self.goal.judge(
            original=self.original_metric,
            metric=self._metric(out) if self.use_labels else None,
            cosine=fid.cosine_mean,
            non_finite=fid.non_finite_values,
            labeled=self.use_labels,
            top1=fid.top1_agreement,
        )
        trial.metric, trial.drop, trial.meets_goal = judged.metric, judged.drop, judged.ok

    def _shortfall(self, t: QuantizeTrial) -> float:
        if not t.measured or t.non_finite_values:
            return float("inf")
        return self.goal.shortfall(drop=t.drop, cosine=t.cosine, labeled=self.use_labels, top1=t.top1_agreement)

    def _objective(self, t: QuantizeTrial) -> tuple[float, float]:
        """Sort key, smaller is better: the objective first, the other one second."""
        other = "size" if self.params.objective == "latency" else "latency"
        return t.axis(self.params.objective), t.axis(other)

    def source(self, prep: str = "original") -> Path:
        """The model a trial quantizes: the original, once pre-processed (static; its nodes named), or once
        through ORT's transformer fusion (checked for equal outputs on eval). A failed preparation fails the
        trials that need it, with the reason."""
        if prep not in self.sources:
            try:
                if prep == "pre_process":
                    done = pre_process(self.src, self.work / "pre.onnx")
                    self.sources[prep] = name_nodes(done, self.work / "pre.named.onnx")
                else:
                    self.sources[prep] = self._fused()
            except EngineError as exc:
                self.sources[prep] = exc.detail
            except Exception as exc:  # ORT's pre-processing or fusion failing on this model: its trials report it
                self.sources[prep] = f"{prep} failed: {str(exc)[:300]}"
        found = self.sources[prep]
        if isinstance(found, str):
            raise EngineError(ErrorCode.QUANTIZATION_FAILED, found)
        return found

    def _fused(self) -> Path:
        fused = self.work / "fused.onnx"
        self.fused_ops = fuse_transformer(self.src, fused)
        if not self.fused_ops:
            raise EngineError(ErrorCode.QUANTIZATION_FAILED, "ORT's transformer fusion matched nothing in this graph")
        session = make_session(str(fused), 1)
        out = run_batched(session, feeds_for(session, self.evaluation.feeds), self.output, 256)
        same = measure(self.spec, self.reference, out, self.evaluation.feeds)
        if not same.cosine_min or same.cosine_min < FUSION_MIN_COSINE or same.non_finite_values:
            raise EngineError(
                ErrorCode.QUANTIZATION_FAILED,
                f"ORT's transformer fusion changed the outputs (per-sample cosine {same.cosine_min}): not used",
            )
        return name_nodes(fused, self.work / "fused.named.onnx")

    # -- trials ---------------------------------------------------------------------------------------------
    def budget_left(self) -> str | None:
        if len(self.trials) >= self.params.max_trials:
            return f"the trial budget ({self.params.max_trials} trials) ran out"
        if time.perf_counter() - self.started >= self.params.max_seconds:
            return f"the time budget ({self.params.max_seconds:g} s) ran out"
        return None

    def trial(self, name: str, config: dict[str, Any], refines: int | None = None) -> QuantizeTrial:
        index = len(self.trials)
        self.progress(
            min(0.95, index / max(1, self.params.max_trials)),
            f"configuration {index + 1} of at most {self.params.max_trials}: {name}",
        )
        started = time.perf_counter()
        dst = self.work / f"trial{index}.onnx"
        trial = QuantizeTrial(
            index=index, name=name, mode=config["mode"], config=config, refines=refines, status="failed", seconds=0
        )
        try:
            self._quantize_and_measure(trial, config, dst)
            self.paths[index] = dst
        except EngineError as exc:
            trial.error = f"{exc.code.value}: {exc.detail}"[:500]
        except Exception as exc:  # ORT's quantizer or runtime failing on one configuration: reported, search goes on
            trial.error = f"{type(exc).__name__}: {str(exc)[:400]}"
        trial.seconds = round(time.perf_counter() - started, 3)
        self.trials.append(trial)
        return trial

    def _quantize_and_measure(self, trial: QuantizeTrial, config: dict[str, Any], dst: Path) -> None:
        prep = _preparation(config)
        settings = {k: v for k, v in config.items() if k != "fuse"}
        qparams = QuantizeParams.model_validate({**self.params.model_dump(exclude_unset=True), **settings})
        t0 = time.perf_counter()
        static = config["mode"] == "static"
        if static:  # pre-processing is done once for every trial, not by the quantizer
            qparams = qparams.model_copy(update={"pre_process": False})
        used = quantize_model(self.source(prep), dst, qparams, self.reader if static else None, self.work)
        if static:
            used["pre_process"] = prep == "pre_process"
        if prep == "fuse":
            used["fuse"] = True
            used["fused_ops"] = self.fused_ops
        trial.quantization_seconds = round(time.perf_counter() - t0, 3)
        trial.config = {"mode": config["mode"], **used}
        session = make_session(str(dst), 1)
        out = run_batched(session, feeds_for(session, self.evaluation.feeds), self.output, 256)
        self._judge(trial, out)
        ta, tb = interleaved_latency(
            str(self.src), str(dst), self.timing_feeds, threads=1, runs=self.params.trial_runs, warmup=3
        )
        trial.original_p50_ms, trial.p50_ms = float(np.median(ta)), float(np.median(tb))
        trial.speedup = trial.original_p50_ms / trial.p50_ms if trial.p50_ms > 0 else None
        trial.size_bytes = dst.stat().st_size
        trial.size_ratio = trial.size_bytes / self.src.stat().st_size
        trial.status = "measured"

    def repair(self, target: QuantizeTrial) -> None:
        """Leave the most damaged nodes of `target` in float, 1, 2, 4, ... until the goal is met. Damage is the SQNR
        lost across each quantized node: static trials on calibration samples (ORT's qdq_loss_debug), dynamic
        ones on eval samples (every tensor both models share by name)."""
        static = target.mode == "static"
        if static and self.reader is None:
            return
        try:
            source = self.source(_preparation(target.config))
            if static:
                assert self.reader is not None
                sqnr = activation_sqnr(source, self.paths[target.index], self.reader, self.work)
            else:
                few = Reader(self.evaluation.feeds, REPAIR_SAMPLES, REPAIR_SAMPLES)
                sqnr = shared_tensor_sqnr(source, self.paths[target.index], few, self.work)
        except Exception as exc:  # the error table is a diagnostic: without it there is no repair
            target.error = f"per-tensor error unavailable, no repair: {str(exc)[:300]}"
            return
        ops = None if static else set(target.config.get("op_types") or ["MatMul", "Gemm"])
        ranked = [name for name, _ in damaged_nodes(source, sqnr, ops)]
        already = list(target.config.get("nodes_to_exclude") or [])
        ranked = [n for n in ranked if n not in already][:-1]  # leaving every node in float is the original
        k = 1
        while ranked and self.budget_left() is None:
            excluded = already + ranked[:k]
            keys = ("mode", "activation_type", "per_channel", "quant_format", "pre_process", "op_types", "fuse")
            config: dict[str, Any] = {key: target.config[key] for key in keys if key in target.config}
            trial = self.trial(
                f"{target.name}, {len(excluded)} node(s) in float",
                {**config, "nodes_to_exclude": excluded},
                target.index,
            )
            if trial.meets_goal or k >= len(ranked):
                return
            k = min(2 * k, len(ranked))

    def repair_fp16(self, target: QuantizeTrial) -> None:
        try:
            blocked = overflowing_nodes(self.src, self.evaluation.feeds, self.work)
        except Exception as exc:  # the overflow search runs the model with every tensor as an output: may fail
            target.error = f"overflow search failed: {str(exc)[:300]}"
            return
        blocked = [n for n in blocked if not n.startswith("(unnamed")]  # the search's copy names every node
        if self.budget_left() is None:  # float16 graph outputs overflow whatever is blocked: float32 I/O too
            self.trial(
                f"fp16, float32 I/O, {len(blocked)} overflowing node(s) in float32",
                {"mode": "fp16", "nodes_to_exclude": blocked, "keep_io_types": True},
                target.index,
            )

    def _first_pass(self) -> tuple[str, list[str]]:
        """Every candidate once, while the budget lasts (fp16 overflows repaired at once)."""
        todo, skipped = candidates(
            self.info,
            self.reader is not None,
            list(self.params.auto_modes),
            self.params.objective,
            fp16_native(),
            embedding_tables(self.src) > 0,
            "torch" in capabilities(),
        )
        for i, (name, config) in enumerate(todo):
            if (why := self.budget_left()) is not None:
                skipped += [f"{n}: {why}" for n, _ in todo[i:]]
                return why, skipped
            trial = self.trial(name, config)
            if trial.measured and trial.mode == "fp16" and trial.non_finite_values:
                self.repair_fp16(trial)
        return "every candidate was tried", skipped

    def _repairs(self, stopped: str) -> str:
        """Repair the best static and dynamic trials that miss the goal while they could beat the best one that
        meets it."""
        repaired: set[int] = set()
        while (why := self.budget_left()) is None:
            met = [t for t in self.trials if t.meets_goal]
            best_met = min((self._objective(t) for t in met), default=None)
            missed = [
                t
                for t in self.trials
                if t.measured
                and not t.meets_goal
                and t.mode in ("static", "dynamic")
                and not t.non_finite_values
                and t.index not in repaired
                and t.refines is None
                and (best_met is None or self._objective(t) < best_met)
            ]
            if not missed:
                return stopped
            target = min(missed, key=self._objective)
            repaired.add(target.index)
            self.repair(target)
        return why

    def run(self) -> tuple[AutoSearch, Path | None, QuantizeTrial | None]:
        stopped, skipped = self._first_pass()
        stopped = self._repairs(stopped)
        measured = [t for t in self.trials if t.measured]
        mark_pareto(measured, lambda t: t.meets_goal)  # type: ignore[attr-defined]  # QuantizeTrials only
        met = [t for t in measured if t.meets_goal]
        tie = self.goal.quality_tie(self.original_metric, self.use_labels)
        chosen = choose(met, self.params.objective, self.original, tie)
        attempt = chosen
        if attempt is None and met:
            attempt = best(front(met), self.params.objective, tie)
        elif attempt is None:
            attempt = min(measured, key=lambda t: (self._shortfall(t), self._objective(t)), default=None)
        for index, path in self.paths.items():
            if attempt is None or index != attempt.index:
                path.unlink(missing_ok=True)
        block = AutoSearch(
            goal=self.goal.text(self.metric_name, self.use_labels, "" if self.use_labels else self.spec.describe()),
            goal_metric=self.metric_name,
            fidelity={
                "output": self.spec.output,
                "pooling": self.spec.pooling,
                "mask_input": self.spec.mask_input,
                "compared": self.spec.describe(),
                "why": self.spec.reason,
            },
            original_metric=self.original_metric,
            objective=self.params.objective,
            trials=self.trials,
            chosen=chosen.index if chosen else None,
            goal_met=chosen is not None,
            kept_original=chosen is None,
            best_attempt=attempt.index if attempt else None,
            verdict=self._verdict(chosen, attempt, bool(met)),
            stopped_because=stopped,
            skipped=skipped,
            timed_at={"batch_size": self.batch, "threads": 1},
        )
        return block, (self.paths[attempt.index] if attempt else None), attempt

    def _verdict(self, chosen: QuantizeTrial | None, attempt: QuantizeTrial | None, met: bool) -> str:
        objective = self.params.objective
        where = f"at batch {self.batch}, 1 thread" if objective == "latency" else ""
        if chosen is not None:
            gain = (
                f"{chosen.speedup:.2f}x faster {where}" if objective == "latency" else f"{chosen.size_ratio:.2f}x size"
            )
            return f"trial {chosen.index} ({chosen.name}) meets the goal and is handed back: {gain}"
        if attempt is None:
            return "no trial could be measured"
        if met:
            measured = (
                f"{attempt.speedup:.2f}x the original's speed {where}"
                if objective == "latency"
                else f"{attempt.size_ratio:.2f}x its size"
            )
            return (
                f"no trial that meets the goal is measurably better on {objective} than the "
                f"original (beyond the {self._tie()} tie band); the best, trial {attempt.index} ({attempt.name}), "
                f"measured {measured}"
            )
        return (
            f"no trial met the goal; the closest, trial {attempt.index} ({attempt.name}), "
            f"scored {self.metric_name} {_fmt(attempt.metric)} against the original's {_fmt(self.original_metric)}"
        )

    def _tie(self) -> str:
        return f"{TIES[self.params.objective]:.0%}"


def _preparation(config: dict[str, Any]) -> str:
    """Which source a trial's config quantizes (Search.source): pre-processed (static), fused (dynamic), original."""
    if config["mode"] == "static" and config.get("pre_process"):
        return "pre_process"
    if config["mode"] == "dynamic" and config.get("fuse"):
        return "fuse"
    return "original"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
