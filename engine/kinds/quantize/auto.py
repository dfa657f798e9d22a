"""`quantize` with `mode=auto`: search for the configuration that meets an accuracy goal with the best latency
(or size), measuring every trial on this machine.

1. Candidates that fit the model: static QDQ with U8S8 and S8S8 per-channel and U8S8 per-tensor for
   convolutional graphs, dynamic MatMul/Gemm quantization for MatMul-heavy (transformer-like) graphs, fp16.
   Static candidates need calibration data (the `calibration` dataset, else `train`).
2. Each trial is quantized, then measured against the original on the `eval` dataset (the goal) and timed
   interleaved with the original at batch 1, 1 thread (the latency objective: the speed-up ratio).
3. While the budget lasts, the best-objective static trial that misses the goal is repaired: the nodes where
   the error grows most (SQNR of the node's input minus SQNR of its output, ORT's qdq_loss_debug) are left
   in float, 1, 2, 4, ... at a time, never all of them (that would be the original again). An fp16 trial
   whose outputs overflow is retried with the overflowing nodes (float32 values beyond fp16's range) kept in
   float32.
4. The chosen trial is the best objective among those that meet the goal (engine.select: objective values within
   its tie band count as equal and the better metric wins); if none meets it, the closest one, and the report
   says plainly that the goal was not met.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import Progress
from engine.inspect import ModelInfo
from engine.kinds.quantize.calibration import Reader
from engine.kinds.quantize.modes import pre_process, quantize_model
from engine.kinds.quantize.params import QuantizeParams
from engine.kinds.quantize.sqnr import activation_sqnr
from engine.measure.data import EvalData, feeds_for, repeat_to
from engine.measure.fidelity import fidelity
from engine.measure.latency import interleaved_latency
from engine.measure.metrics import PRIMARY, Predictions
from engine.runtime import make_session, run_batched
from engine.select.goal import Goal
from engine.select.trial import Trial, best, mark_pareto

PASS_THROUGH = {
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
    "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Gelu",
}  # fmt: skip
FP16_MAX = 65504.0
OVERFLOW_SAMPLES = 32


class QuantizeTrial(Trial):
    """One configuration tried: the shared Trial axes plus what was quantized and how it was judged."""

    mode: str
    config: dict[str, Any] = Field(description="The quantize params of this trial (mode-specific)")
    refines: int | None = Field(default=None, description="The trial this one repairs (node exclusion, fp16 block)")
    error: str | None = None
    original_p50_ms: float | None = Field(default=None, description="At timed_at, interleaved with the trial")
    p50_ms: float | None = None
    drop: float | None = Field(default=None, description="Drop of the metric in the goal's terms (accuracy goals)")
    meets_goal: bool = False
    quantization_seconds: float | None = None


class AutoSearch(BaseModel):
    goal: str = Field(description="The goal in words, with its numbers")
    goal_metric: str = Field(description="accuracy, r2 or cosine")
    original_metric: float | None
    objective: Literal["latency", "size"]
    trials: list[QuantizeTrial]
    chosen: int | None = Field(description="Index of the trial handed back")
    goal_met: bool
    stopped_because: str = Field(description="Why the search ended: all candidates tried, trials or time budget")
    timed_at: dict[str, int] = Field(
        default_factory=dict, description="The batch size and threads every trial was timed at (the latency objective)"
    )
    skipped: list[str] = Field(default_factory=list, description="Candidates not tried, and why")


def _ops(info: ModelInfo) -> dict[str, int]:
    ops: dict[str, int] = {}
    for op, n in info.op_histogram.items():
        ops[op.split(":")[-1]] = ops.get(op.split(":")[-1], 0) + n
    return ops


def candidates(
    info: ModelInfo, has_calibration: bool, modes: list[str]
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(name, quantize params) to try first, best bets first, and the ones skipped with the reason."""
    todo, skipped = _candidates(info, has_calibration)
    skipped += [
        f"{name}: {config['mode']} is not in auto_modes" for name, config in todo if config["mode"] not in modes
    ]
    return [(n, c) for n, c in todo if c["mode"] in modes], skipped


def _candidates(info: ModelInfo, has_calibration: bool) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    ops = _ops(info)
    convs = ops.get("Conv", 0) + ops.get("ConvTranspose", 0)
    matmuls = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    static = [  # pre-processed (BatchNorm folded etc.): 3.0x instead of 2.1x on the ResNet-like benchmark
        (
            "static U8S8 per-channel",
            {"mode": "static", "activation_type": "uint8", "per_channel": True, "pre_process": True},
        ),
        (
            "static S8S8 per-channel",
            {"mode": "static", "activation_type": "int8", "per_channel": True, "pre_process": True},
        ),
        (
            "static U8S8 per-tensor",
            {"mode": "static", "activation_type": "uint8", "per_channel": False, "pre_process": True},
        ),
        (
            "static U8S8 per-channel, not pre-processed",
            {"mode": "static", "activation_type": "uint8", "per_channel": True, "pre_process": False},
        ),
    ]
    dynamic = [
        ("dynamic int8 MatMul/Gemm", {"mode": "dynamic", "per_channel": False}),
        ("dynamic int8 MatMul/Gemm per-channel", {"mode": "dynamic", "per_channel": True}),
    ]
    fp16 = [("fp16", {"mode": "fp16"})]
    skipped = []
    if not has_calibration:
        skipped += [f"{name}: no calibration or train dataset" for name, _ in static]
        static = []
    if not matmuls:
        skipped += [f"{name}: the model has no MatMul or Gemm" for name, _ in dynamic]
        dynamic = []
    elif convs:  # dynamic convolutions are slower than fp32 (ConvInteger); dynamic still helps a conv net's head
        skipped.append(f"{dynamic[1][0]}: the model is convolutional, one dynamic candidate is enough")
        dynamic = dynamic[:1]
    if convs or not matmuls:
        return static[:2] + dynamic + fp16 + static[2:], skipped
    return dynamic + static[:1] + fp16 + static[1:], skipped  # MatMul-heavy: transformer-like


def name_nodes(src: Path, dst: Path) -> Path:
    """A copy of the model whose nodes all have names (nodes_to_exclude needs them), or src if they do."""
    model = onnx.load(str(src))
    if all(n.name for n in model.graph.node):
        return src
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    onnx.save(model, str(dst))
    return dst


def damaged_nodes(model_path: Path, sqnr: dict[str, float]) -> list[tuple[str, float]]:
    """Quantized compute nodes ranked by how much SQNR falls across them (input SQNR - output SQNR), worst first.

    A pass-through node's output (Relu, pooling, reshapes) is charged to the compute node that feeds it."""
    model = onnx.load(str(model_path))
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    ranked: dict[str, float] = {}
    best = max(sqnr.values(), default=0.0)  # a graph input is not collected: it is as good as the best tensor
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in PASS_THROUGH or not node.output:
            continue
        inputs = [sqnr.get(i, best) for i in node.input if i in sqnr or i in graph_inputs]
        after = node.output[0]  # follow pass-throughs (fused Conv+Relu has no QDQ between them)
        outs = [sqnr[after]] if after in sqnr else []
        while len(users.get(after, [])) == 1 and users[after][0].op_type in PASS_THROUGH:
            after = users[after][0].output[0]
            outs += [sqnr[after]] if after in sqnr else []
        if not inputs or not outs:
            continue
        out = min(outs)
        ranked[node.name] = min(inputs) - out
    return sorted(ranked.items(), key=lambda kv: -kv[1])


def overflowing_nodes(model_path: Path, feeds: dict[str, np.ndarray], tmp: Path) -> list[str]:
    """Nodes that read or write float32 values beyond fp16's range (65,504) on a few samples: keep them in float32.

    Both ends count: a consumer of an overflowing tensor would get it cast to fp16, which is inf again.
    Unnamed nodes are described by op type and output (they cannot be excluded by name)."""
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    aug = tmp / "overflow.aug.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(aug))
    try:
        session = make_session(str(aug), 1)
        sample = {k: v[:OVERFLOW_SAMPLES] for k, v in feeds.items()}
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, feeds_for(session, sample))
    finally:
        aug.unlink(missing_ok=True)
    big = {k: v for k, v in sample.items() if v.dtype.kind == "f" and np.abs(v).max(initial=0) > FP16_MAX}
    for name, value in zip(names, values, strict=True):
        if value.dtype.kind == "f" and value.size and float(np.nanmax(np.abs(value))) > FP16_MAX:
            big[name.removesuffix("_ReshapeOutput")] = value
    model = onnx.load(str(model_path))
    return [
        n.name or f"(unnamed {n.op_type} -> {n.output[0]})"
        for n in model.graph.node
        if any(t in big for t in [*n.input, *n.output])
    ]


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
        )
        self.sources: dict[bool, Path | str] = {False: src}
        self.trials: list[QuantizeTrial] = []
        self.paths: dict[int, Path] = {}
        self.started = time.perf_counter()
        ref = make_session(str(src), 1)
        self.reference = run_batched(ref, feeds_for(ref, evaluation.feeds), prediction_output, 256)
        self.use_labels = evaluation.labeled
        self.metric_name = PRIMARY[evaluation.task] if evaluation.task and self.use_labels else "cosine"
        self.original_metric = self._metric(self.reference) if self.use_labels else 1.0
        self.timing_feeds = repeat_to(evaluation.feeds, batch)

    # -- the goal -------------------------------------------------------------------------------------------
    def _metric(self, out: np.ndarray) -> float | None:
        e = self.evaluation
        assert e.task is not None and e.labels is not None
        return Predictions(e.task, out, e.labels, e.summary).metrics().get(self.metric_name)

    def _judge(self, trial: QuantizeTrial, out: np.ndarray) -> None:
        fid = fidelity(self.output, self.reference, out)
        trial.cosine, trial.non_finite_values = fid.cosine, fid.non_finite_values
        judged = self.goal.judge(
            original=self.original_metric,
            metric=self._metric(out) if self.use_labels else None,
            cosine=fid.cosine,
            non_finite=fid.non_finite_values,
            labeled=self.use_labels,
        )
        trial.metric, trial.drop, trial.meets_goal = judged.metric, judged.drop, judged.ok

    def _shortfall(self, t: QuantizeTrial) -> float:
        if not t.measured or t.non_finite_values:
            return float("inf")
        return self.goal.shortfall(drop=t.drop, cosine=t.cosine, labeled=self.use_labels)

    def _objective(self, t: QuantizeTrial) -> tuple[float, float]:
        """Sort key, smaller is better: the objective first, the other one second."""
        other = "size" if self.params.objective == "latency" else "latency"
        return t.axis(self.params.objective), t.axis(other)

    def source(self, pre: bool) -> Path:
        """The model static trials quantize: the original, or once pre-processed (and its nodes named)."""
        if pre not in self.sources:
            try:
                done = pre_process(self.src, self.work / "pre.onnx")
                self.sources[pre] = name_nodes(done, self.work / "pre.named.onnx")
            except Exception as exc:  # ORT's pre-processing failing on this model: static trials report it
                self.sources[pre] = f"quant_pre_process failed: {str(exc)[:300]}"
        found = self.sources[pre]
        if isinstance(found, str):
            raise EngineError(ErrorCode.QUANTIZATION_FAILED, found)
        return found

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
        qparams = QuantizeParams.model_validate({**self.params.model_dump(exclude_unset=True), **config})
        t0 = time.perf_counter()
        static = config["mode"] == "static"
        pre = bool(config.get("pre_process")) and static
        if static:  # pre-processing is done once for every trial, not by the quantizer
            qparams = qparams.model_copy(update={"pre_process": False})
        used = quantize_model(self.source(pre), dst, qparams, self.reader if static else None, self.work)
        if static:
            used["pre_process"] = pre
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

    def repair_static(self, target: QuantizeTrial) -> None:
        """Leave the most damaged nodes of `target` in float, 1, 2, 4, ... until the goal is met."""
        if self.reader is None:
            return
        try:
            source = self.source(bool(target.config.get("pre_process")))
            sqnr = activation_sqnr(source, self.paths[target.index], self.reader, self.work)
        except Exception as exc:  # the error table is a diagnostic: without it there is no repair
            target.error = f"per-tensor error unavailable, no repair: {str(exc)[:300]}"
            return
        ranked = [name for name, _ in damaged_nodes(source, sqnr)]
        already = list(target.config.get("nodes_to_exclude") or [])
        ranked = [n for n in ranked if n not in already][:-1]  # leaving every node in float is the original
        k = 1
        while ranked and self.budget_left() is None:
            excluded = already + ranked[:k]
            config: dict[str, Any] = {
                key: target.config[key]
                for key in ("mode", "activation_type", "per_channel", "quant_format", "pre_process")
                if key in target.config
            }
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
        todo, skipped = candidates(self.info, self.reader is not None, list(self.params.auto_modes))
        for i, (name, config) in enumerate(todo):
            if (why := self.budget_left()) is not None:
                skipped += [f"{n}: {why}" for n, _ in todo[i:]]
                return why, skipped
            trial = self.trial(name, config)
            if trial.measured and trial.mode == "fp16" and trial.non_finite_values:
                self.repair_fp16(trial)
        return "every candidate was tried", skipped

    def _repairs(self, stopped: str) -> str:
        """Repair the best static trials that miss the goal while they could beat the best one that meets it."""
        repaired: set[int] = set()
        while (why := self.budget_left()) is None:
            met = [t for t in self.trials if t.meets_goal]
            best_met = min((self._objective(t) for t in met), default=None)
            missed = [
                t
                for t in self.trials
                if t.measured
                and not t.meets_goal
                and t.mode == "static"
                and t.index not in repaired
                and t.refines is None
                and (best_met is None or self._objective(t) < best_met)
            ]
            if not missed:
                return stopped
            target = min(missed, key=self._objective)
            repaired.add(target.index)
            self.repair_static(target)
        return why

    def run(self) -> tuple[AutoSearch, Path | None, QuantizeTrial | None]:
        stopped, skipped = self._first_pass()
        stopped = self._repairs(stopped)
        measured = [t for t in self.trials if t.measured]
        mark_pareto(measured)
        met = [t for t in measured if t.meets_goal]
        if met:
            chosen: QuantizeTrial | None = best(met, self.params.objective)
        else:
            chosen = min(measured, key=lambda t: (self._shortfall(t), self._objective(t)), default=None)
        for index, path in self.paths.items():
            if chosen is None or index != chosen.index:
                path.unlink(missing_ok=True)
        block = AutoSearch(
            goal=self.goal.text(self.metric_name, self.use_labels),
            goal_metric=self.metric_name,
            original_metric=self.original_metric,
            objective=self.params.objective,
            trials=self.trials,
            chosen=chosen.index if chosen else None,
            goal_met=bool(chosen and chosen.meets_goal),
            stopped_because=stopped,
            skipped=skipped,
            timed_at={"batch_size": self.batch, "threads": 1},
        )
        return block, (self.paths[chosen.index] if chosen else None), chosen
