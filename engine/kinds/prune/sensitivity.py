"""`sensitivity`: each layer structured-pruned alone at several ratios and measured on eval; per-layer ratios chosen
(the largest within the budget each), the combination verified, backing off the layer that costs the most accuracy
per MAC it saves until the combination fits. The budget is the shared accuracy goal (engine.select.goal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import Progress
from engine.inspect import describe
from engine.kinds.prune.params import PruneParams
from engine.measure.data import EvalData, feeds_for
from engine.measure.fidelity import fidelity
from engine.measure.metrics import PRIMARY, Predictions
from engine.pruning.structured import Graph, dependency_groups, producers, prune_structured
from engine.runtime import make_session, run_batched
from engine.select.goal import Goal


class Judge:
    """The budget of a sensitivity scan: the primary metric's drop on eval, or output cosine without labels."""

    def __init__(self, src: Path, evaluation: EvalData, output: str, params: PruneParams, batch: int) -> None:
        self.evaluation, self.output, self.batch = evaluation, output, batch
        self.goal = Goal(params.max_accuracy_drop, params.drop_mode, params.min_output_cosine)
        self.use_labels = evaluation.labeled
        self.metric_name = PRIMARY[evaluation.task] if evaluation.task and self.use_labels else "cosine"
        self.reference = self._outputs(src)
        self.original = self._metric(self.reference)

    def _outputs(self, path: Path) -> np.ndarray:
        session = make_session(str(path), 1)
        return run_batched(session, feeds_for(session, self.evaluation.feeds), self.output, self.batch)

    def _metric(self, out: np.ndarray) -> float:
        e = self.evaluation
        if not self.use_labels:
            return fidelity(self.output, self.reference, out).cosine
        assert e.task is not None and e.labels is not None
        return float(Predictions(e.task, out, e.labels, e.summary).metrics().get(self.metric_name) or 0.0)

    def measure(self, path: Path) -> tuple[float, float, bool]:
        """(metric, drop, within budget) of a candidate model; without labels the drop is 1 - cosine."""
        metric = self._metric(self._outputs(path))
        if not self.use_labels:
            judged = self.goal.judge(original=None, metric=None, cosine=metric, labeled=False)
            return metric, 1.0 - metric, judged.ok
        judged = self.goal.judge(original=self.original, metric=metric, cosine=None, labeled=True)
        return metric, judged.drop if judged.drop is not None else float("inf"), judged.ok

    def budget(self) -> str:
        g = self.goal
        if self.use_labels:
            return f"{self.metric_name} drops by at most {g.max_accuracy_drop:g} ({g.drop_mode})"
        return f"output cosine >= {g.min_output_cosine:g}"


def _groups(original: onnx.ModelProto, params: PruneParams) -> list[tuple[str, str]]:
    """What the scan prunes, one entry per dependency group (coupled layers lose channels together, so they are
    scanned together): (label, the weight its ratio is keyed by: the group's first member)."""
    g = Graph(original)
    found = producers(g)
    names = {weight: node.name or node.output[0] for node, weight, *_ in found}
    layers = []
    for members in dependency_groups(g, found, params.coupled)[0].members().values():
        if any(w in params.exclude or names[w] in params.exclude for w in members):
            continue
        extra = (
            f" (group of {len(members)}: with {', '.join(names[w] for w in members[1:3])}" if len(members) > 1 else ""
        )
        extra += ", ...)" if len(members) > 3 else ")" if extra else ""
        layers.append((names[members[0]] + extra, members[0]))
    return layers


def sensitivity_prune(
    src: Path, dst: Path, params: PruneParams, judge: Judge, tmp: Path, progress: Progress
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Scan each prunable layer (each dependency group) alone at each ratio, choose per-group ratios, verify the
    combination."""
    original = onnx.load(str(src))
    params.check_names(original)
    base_macs = describe(original).macs_per_sample or 0
    layers = _groups(original, params)
    scan: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    seen_alone: set[str] = set()
    trial = tmp / "sensitivity.onnx"

    def build(ratios: dict[str, float]) -> tuple[onnx.ModelProto, list, list]:
        model = onnx.ModelProto()
        model.CopyFrom(original)
        rows, left = prune_structured(
            model,
            None,
            ratios,
            params.criterion,
            set(params.exclude),
            set(params.exclude_op_types),
            coupled=params.coupled,
        )
        return model, rows, left

    total = max(1, len(layers) * len(params.sensitivity_ratios))
    for i, (label, weight) in enumerate(layers):
        for j, r in enumerate(params.sensitivity_ratios):
            progress((i * len(params.sensitivity_ratios) + j) / total, f"sensitivity: {label} at {r:g}")
            model, rows, left = build({weight: r})
            if not rows:
                for a in left:
                    if a["weight"] == weight and weight not in seen_alone:
                        alone.append(a)
                        seen_alone.add(weight)
                break
            onnx.save(model, str(trial))
            metric, drop, ok = judge.measure(trial)
            macs = describe(model).macs_per_sample or 0
            scan.append({"layer": label, "weight": weight, "ratio": r, "metric": metric, "drop": drop,
                         "within_budget": ok, "macs_removed": base_macs - macs})  # fmt: skip
    if not scan:
        reasons = "; ".join(f"{a['layer']}: {a['why']}" for a in alone[:10]) or "no Conv/Gemm/MatMul with weights"
        raise EngineError(ErrorCode.NOTHING_TO_PRUNE, f"no layer could be pruned structurally ({reasons})")
    choice: dict[str, float] = {}
    for weight in {row["weight"] for row in scan}:
        fits = [row for row in scan if row["weight"] == weight and row["within_budget"]]
        if fits:
            choice[weight] = max(fits, key=lambda row: row["ratio"])["ratio"]
    combined = None
    steps = []
    while choice:
        model, rows, left = build(dict(choice))
        onnx.save(model, str(trial))
        metric, drop, ok = judge.measure(trial)
        combined = {"ratios": dict(choice), "metric": metric, "drop": drop, "within_budget": ok,
                    "macs_removed": base_macs - (describe(model).macs_per_sample or 0)}  # fmt: skip
        steps.append(combined)
        if ok:
            break

        # Back off the layer that costs most per MAC it saves, one ratio step down (or out).
        def cost(w: str) -> float:
            row = next(x for x in scan if x["weight"] == w and x["ratio"] == choice[w])
            return row["drop"] / max(row["macs_removed"], 1)

        worst = max(choice, key=cost)
        lower = [r for r in params.sensitivity_ratios if r < choice[worst]]
        if lower:
            choice[worst] = lower[-1]
        else:
            del choice[worst]
    met = bool(combined and combined["within_budget"])
    final = choice if met else {}
    model, rows, left = build(final)  # with nothing within the budget: the model unchanged, and the report says so
    onnx.save(model, str(dst))
    trial.unlink(missing_ok=True)
    block = {
        "metric": judge.metric_name,
        "original_metric": judge.original,
        "budget": judge.budget(),
        "scan": scan,
        "steps": steps,
        "chosen_ratios": final,
        "goal_met": met,
    }
    config = {"ratios": final, "criterion": params.criterion, "sensitivity_ratios": params.sensitivity_ratios}
    return config, rows, alone + [a for a in left if a["weight"] not in final and a["weight"] not in seen_alone], block
