"""The `prune` job: remove what the model does not need, and measure what that costs against the original.

Methods built so far:
- `simplify`: the onnxscript optimizer (constant folding with a size limit, dead-node and unused-initializer
  removal, identity/no-op elimination, shape inference) followed by onnxscript's rewrite rules that fold
  BatchNormalization into Conv/ConvTranspose/Gemm and fuse MatMul+Add into Gemm. onnxscript is chosen over
  onnxslim and onnxoptimizer because it is maintained by the ONNX/PyTorch exporter team, its constant folding
  takes explicit input/output size limits, and its rules are individually selectable. The result is checked
  numerically against the original on sample inputs; a result that differs, or a file that grew, is refused.
- `magnitude`: unstructured sparsity — the smallest weights of Conv/ConvTranspose/Gemm/MatMul set to zero,
  to a target ratio per layer or globally (one threshold across layers). Dense storage neither shrinks nor
  runs faster: the report gives the gzip size, which does shrink, and says so.
- `structured`: whole neurons and conv channels removed, with their dependents (engine/structured.py).
- `sensitivity`: each layer structured-pruned alone at several ratios and measured on eval; per-layer ratios
  chosen (the largest within the budget each), the combination verified, backing off the layer that costs the
  most accuracy per MAC it saves until the combination fits.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import Field, field_validator

from engine import binding
from engine.compare import Comparison, compare_with_params, eval_data, feeds_for
from engine.datasets import DatasetSummary
from engine.errors import EngineError
from engine.evaluate import pick_output
from engine.inspect import ModelInfo, check_and_inspect
from engine.jobs import ArtifactOut, JobInputs, JobKind, Progress, ReportBase, StrictParams
from engine.machine import load_average, machine_info
from engine.runtime import fixed_batch, make_session, run_batched

PRUNABLE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
CONTROL_FLOW = {"If", "Loop", "Scan"}
SIMPLIFY_CHECK_SAMPLES = 64


class PruneParams(StrictParams):
    method: Literal["simplify", "magnitude", "structured", "sensitivity"] = Field(
        description="simplify: graph clean-up that keeps the outputs; magnitude: zero the smallest weights; "
        "structured: remove whole neurons and conv channels; sensitivity: prune each layer alone at several "
        "ratios, then structured-prune with the per-layer ratios that remove the most MACs within max_accuracy_drop"
    )
    sensitivity_ratios: list[float] = Field(
        default=[0.25, 0.5, 0.75], min_length=1, max_length=10, description="sensitivity: ratios tried per layer"
    )
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="sensitivity: most the primary metric may drop (see drop_mode)"
    )
    drop_mode: Literal["relative", "absolute"] = "relative"
    min_output_cosine: float = Field(
        default=0.99, ge=-1, le=1, description="sensitivity: the budget when eval has no labels"
    )
    criterion: Literal["l1", "l2", "activation"] = Field(
        default="l1",
        description="structured: importance of a unit: L1/L2 norm of its weights, or its mean absolute activation "
        "on the eval data",
    )
    ratio: float | None = Field(default=None, gt=0, lt=1, description="magnitude: fraction of weights set to zero")
    ratios: dict[str, float] | None = Field(
        default=None, description="magnitude: per-layer fractions keyed by weight initializer name"
    )
    scope: Literal["per_layer", "global"] = Field(
        default="per_layer", description="magnitude: each layer to `ratio`, or one threshold across all layers"
    )
    exclude: list[str] = Field(default_factory=list, description="Weight initializer or node names to leave alone")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types to leave alone, e.g. Conv")
    fold_size_limit: int = Field(
        default=1 << 20,
        ge=0,
        description="simplify: largest constant (bytes, as 4-byte elements) that constant folding may create",
    )
    tolerance: float = Field(default=1e-4, gt=0, description="simplify: max abs difference allowed (relative to scale)")
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    batch_sizes: list[int] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[int] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000)
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1)

    @field_validator("sensitivity_ratios")
    @classmethod
    def _sens(cls, v: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in v):
            raise ValueError("sensitivity ratios must be in (0, 1)")
        return sorted(set(v))

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for name, r in (v or {}).items():
            if not 0 < r < 1:
                raise ValueError(f"ratio of {name!r} must be in (0, 1), got {r}")
        return v


class PruneReport(ReportBase):
    kind: Literal["prune"] = "prune"
    method: str
    config: dict[str, Any]
    comparison: Comparison
    parameters: dict[str, int] = Field(description="Elements in initializers, before and after")
    nonzero_parameters: dict[str, int] = Field(description="Non-zero initializer elements, before and after")
    macs_per_sample: dict[str, int | None]
    gzip_size_bytes: dict[str, int] = Field(description="The files compressed with gzip -6: sparsity shows here")
    nodes: dict[str, int]
    op_changes: dict[str, int] = Field(description="Op type -> change in node count (simplify)")
    layers: list[dict[str, Any]] = Field(description="magnitude: per-layer sparsity (simplify: see op_changes)")
    left_alone: list[dict[str, str]] = Field(description="Layers not pruned, and why")
    max_abs_difference: float | None = Field(
        default=None, description="simplify: largest output difference against the original on sample inputs"
    )
    sensitivity: dict[str, Any] | None = Field(
        default=None,
        description="sensitivity: each layer pruned alone at each ratio (metric, drop, MACs removed), the chosen "
        "per-layer ratios and whether the combination met the budget",
    )
    output_model: dict[str, Any]
    seconds: float


def validate(info: ModelInfo, summaries: dict[str, DatasetSummary], params: PruneParams) -> None:
    if params.method == "sensitivity" and "eval" not in summaries:
        raise EngineError(
            "missing_dataset", "the sensitivity scan measures on an eval (or test, or validation) dataset"
        )
    if params.method in ("magnitude", "structured") and params.ratio is None and not params.ratios:
        raise EngineError("missing_param", f"{params.method} pruning needs params.ratio or params.ratios")
    if params.method == "structured" and params.criterion == "activation" and "eval" not in summaries:
        raise EngineError("missing_dataset", "criterion 'activation' needs an eval (or test, or validation) dataset")
    if "eval" in summaries:
        binding.plan(info.inputs, summaries["eval"])
    pick_output(info, params.output)


def _gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6))


def _nonzero(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        total += int(np.count_nonzero(a)) if a.dtype.kind in "fiub" else a.size
    return total


def _ops(model: onnx.ModelProto) -> dict[str, int]:
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


# -- simplify -------------------------------------------------------------------------------------------------
SIMPLIFY_RULES = (
    "fuse_batchnorm_into_conv_rule",
    "fuse_batchnorm_into_conv_transpose_rule",
    "fuse_batchnorm_into_gemm_rule",
    "matmul_add_to_gemm_rule",
    "no_op_transpose_rule",
    "no_op_expand_rule",
    "no_op_cast_rule",
    "dropout_inference_rule",
    "dropout_zero_rule",
    "add_0_rule",
    "sub_0_rule",
    "mul_by_1_rule",
    "div_by_1_rule",
    "cast_cast_rule",
    "reshape_reshape_rule",
    "transpose_transpose_rule",
    "unsqueeze_unsqueeze_rule",
)


def simplify_model(src: Path, dst: Path, fold_size_limit: int) -> dict[str, Any]:
    import onnxscript.optimizer
    import onnxscript.rewriter
    from onnxscript.rewriter.rules import common

    model = onnx.load(str(src))
    elements = max(1, fold_size_limit // 4)  # onnxscript counts elements; a float32 element is 4 bytes
    optimized = onnxscript.optimizer.optimize(model, input_size_limit=elements, output_size_limit=elements)
    rules = [getattr(common, name) for name in SIMPLIFY_RULES if hasattr(common, name)]
    rewritten = onnxscript.rewriter.rewrite(optimized, pattern_rewrite_rules=rules)
    rewritten = onnxscript.optimizer.optimize(rewritten, input_size_limit=elements, output_size_limit=elements)
    del rewritten.graph.value_info[:]  # inferred shapes: ONNX Runtime infers them again, the file stays small
    onnx.save(rewritten, str(dst))
    return {"fold_size_limit": fold_size_limit, "rules": [n for n in SIMPLIFY_RULES if hasattr(common, n)]}


def max_difference(a: Path, b: Path, feeds: dict[str, np.ndarray], outputs: list[str], batch: int = 64) -> float:
    """Largest abs difference between the two models' outputs, relative to the original's scale (max |y|, >= 1)."""
    sa, sb = make_session(str(a), 1), make_session(str(b), 1)
    worst = 0.0
    for name in outputs:
        ya = run_batched(sa, feeds_for(sa, feeds), name, batch).astype(np.float64)
        yb = run_batched(sb, feeds_for(sb, feeds), name, batch).astype(np.float64)
        if ya.shape != yb.shape:
            raise EngineError("prune_failed", f"output {name!r} changed shape: {list(ya.shape)} -> {list(yb.shape)}")
        if ya.size:
            scale = max(1.0, float(np.abs(ya).max()))
            worst = max(worst, float(np.abs(ya - yb).max()) / scale)
    return worst


# -- magnitude ------------------------------------------------------------------------------------------------
def prunable_weights(model: onnx.ModelProto, params: PruneParams) -> tuple[dict[str, str], list[dict[str, str]]]:
    """{weight initializer: node name} for weights that may be pruned; and the layers left alone, with why."""
    inits = {t.name: t for t in model.graph.initializer}
    chosen: dict[str, str] = {}
    alone: list[dict[str, str]] = []
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    for node in model.graph.node:
        if node.op_type not in PRUNABLE_OPS:
            continue
        label = node.name or node.output[0]
        slots = [1] if node.op_type != "MatMul" else [0, 1]
        for slot in slots:
            if slot >= len(node.input) or node.input[slot] not in inits:
                continue
            name = node.input[slot]
            t = inits[name]
            why = None
            if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                why = "not a float weight"
            elif name in params.exclude or node.name in params.exclude:
                why = "excluded by params.exclude"
            elif node.op_type in params.exclude_op_types:
                why = f"{node.op_type} excluded by params.exclude_op_types"
            elif users.get(name, 0) > 1:
                why = "the weight is shared by several nodes"
            if why:
                alone.append({"layer": label, "weight": name, "why": why})
            else:
                chosen[name] = label
    return chosen, alone


def check_names(model: onnx.ModelProto, params: PruneParams) -> None:
    """Names in params.exclude must be weights or nodes of the model: a typo would otherwise prune that layer."""
    known = {t.name for t in model.graph.initializer} | {n.name for n in model.graph.node if n.name}
    unknown = sorted(set(params.exclude) - known)
    if unknown:
        raise EngineError("unknown_layer", f"params.exclude names no weight or node of the model: {unknown[:10]}")


def magnitude_prune(src: Path, dst: Path, params: PruneParams) -> tuple[dict[str, Any], list[dict], list[dict]]:
    model = onnx.load(str(src))
    check_names(model, params)
    chosen, alone = prunable_weights(model, params)
    unknown = sorted(set(params.ratios or {}) - set(chosen) - {a["weight"] for a in alone})
    if unknown:
        names = sorted({t.name for t in model.graph.initializer})
        raise EngineError(
            "unknown_layer",
            f"params.ratios names weights that are not prunable layers: {unknown[:10]} (weights: {names[:20]})",
        )
    if not chosen:
        raise EngineError("nothing_to_prune", "the model has no prunable layer (float Conv/Gemm/MatMul weights)")
    by_name = {t.name: t for t in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(by_name[name]).copy() for name in chosen}
    targets = {name: (params.ratios or {}).get(name, params.ratio) for name in chosen}
    threshold = None
    if params.scope == "global" and params.ratio is not None:
        pooled = np.concatenate([np.abs(a).ravel() for n, a in arrays.items() if n not in (params.ratios or {})])
        if pooled.size:
            threshold = float(np.quantile(pooled, params.ratio))
    rows = []
    for name, array in arrays.items():
        target = targets[name]
        before = float((array == 0).mean())
        if target is None:
            alone.append({"layer": chosen[name], "weight": name, "why": "no ratio given for it"})
            continue
        flat = np.abs(array).ravel()
        if threshold is not None and name not in (params.ratios or {}):
            mask = np.abs(array) <= threshold
        else:
            k = int(round(target * flat.size))
            mask = np.zeros(flat.size, dtype=bool)
            if k > 0:
                mask[np.argpartition(flat, k - 1)[:k]] = True
            mask = mask.reshape(array.shape)
        array[mask] = 0
        by_name[name].CopyFrom(numpy_helper.from_array(array.astype(array.dtype), name))
        rows.append(
            {
                "layer": chosen[name],
                "weight": name,
                "shape": list(array.shape),
                "target": target if threshold is None or name in (params.ratios or {}) else None,
                "sparsity_before": round(before, 4),
                "sparsity_after": round(float((array == 0).mean()), 4),
            }
        )
    onnx.save(model, str(dst))
    config = {"scope": params.scope, "ratio": params.ratio, "ratios": params.ratios, "global_threshold": threshold}
    return config, rows, alone


# -- structured -----------------------------------------------------------------------------------------------
ACTIVATION_SAMPLES = 256


def activation_scores(src: Path, feeds: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    """Mean |activation| per unit of every candidate layer's output on up to ACTIVATION_SAMPLES samples."""
    from engine.structured import Graph, producers

    model = onnx.load(str(src))
    g = Graph(model)
    names = {node.output[0]: (1 if node.op_type == "Conv" else -1) for node, *_ in producers(g)}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    path = tmp / "activations.onnx"
    onnx.save(model, str(path))
    try:
        session = make_session(str(path), 1)
        sample = {k: v[:ACTIVATION_SAMPLES] for k, v in feeds.items()}
        wanted = list(names)
        values = session.run(wanted, feeds_for(session, sample))
    finally:
        path.unlink(missing_ok=True)
    scores = {}
    for name, value in zip(wanted, values, strict=True):
        a = np.abs(np.moveaxis(value.astype(np.float64), names[name], 0))
        scores[name] = a.reshape(a.shape[0], -1).mean(axis=1)
    return scores


def structured_prune(src: Path, dst: Path, params: PruneParams, feeds: dict[str, np.ndarray] | None, tmp: Path):
    from engine.structured import prune_structured

    model = onnx.load(str(src))
    check_names(model, params)
    scores = activation_scores(src, feeds, tmp) if params.criterion == "activation" and feeds is not None else None
    known = {t.name for t in model.graph.initializer}
    unknown = sorted(set(params.ratios or {}) - known)
    if unknown:
        raise EngineError("unknown_layer", f"params.ratios names weights the model does not have: {unknown[:10]}")
    rows, alone = prune_structured(
        model,
        params.ratio,
        params.ratios,
        params.criterion,
        set(params.exclude),
        set(params.exclude_op_types),
        scores,
    )
    if not rows:
        reasons = "; ".join(f"{a['layer']}: {a['why']}" for a in alone[:10]) or "no Conv/Gemm/MatMul with weights"
        raise EngineError("nothing_to_prune", f"no layer could be pruned structurally ({reasons})")
    onnx.save(model, str(dst))
    config = {"ratio": params.ratio, "ratios": params.ratios, "criterion": params.criterion}
    return config, rows, alone


class _Judge:
    """The budget of a sensitivity scan: the primary metric's drop on eval, or output cosine without labels."""

    def __init__(self, src: Path, feeds, labels, summary, task, output: str, params: PruneParams, batch: int) -> None:
        from engine.compare import _task_metrics

        self.feeds, self.labels, self.summary, self.task, self.output = feeds, labels, summary, task, output
        self.params, self.batch, self._task_metrics = params, batch, _task_metrics
        self.use_labels = labels is not None and task is not None
        self.metric_name = ("accuracy" if task == "classification" else "r2") if self.use_labels else "cosine"
        self.reference = self._outputs(src)
        self.original = self._metric(self.reference)

    def _outputs(self, path: Path) -> np.ndarray:
        session = make_session(str(path), 1)
        return run_batched(session, feeds_for(session, self.feeds), self.output, self.batch)

    def _metric(self, out: np.ndarray) -> float:
        if not self.use_labels:
            from engine.compare import fidelity

            return fidelity(self.output, self.reference, out).cosine
        value = self._task_metrics(self.task, out, self.labels, self.summary)(np.arange(len(self.labels)))
        return float(value.get(self.metric_name) or 0.0)

    def measure(self, path: Path) -> tuple[float, float, bool]:
        """(metric, drop, within budget) of a candidate model."""
        metric = self._metric(self._outputs(path))
        if not self.use_labels:
            return metric, 1.0 - metric, metric >= self.params.min_output_cosine
        drop = self.original - metric
        if self.params.drop_mode == "relative" and self.original:
            drop /= abs(self.original)
        return metric, drop, drop <= self.params.max_accuracy_drop + 1e-12


def sensitivity_prune(src: Path, dst: Path, params: PruneParams, judge: _Judge, tmp: Path, progress: Progress):
    """Scan each prunable layer alone at each ratio, choose per-layer ratios, verify the combination."""
    from engine.inspect import describe
    from engine.structured import Graph, producers, prune_structured

    original = onnx.load(str(src))
    check_names(original, params)
    base_macs = describe(original).macs_per_sample or 0
    layers = [(node.name or node.output[0], weight) for node, weight, *_ in producers(Graph(original))]
    layers = [(n, w) for n, w in layers if w not in params.exclude and n not in params.exclude]
    scan, alone, seen_alone = [], [], set()
    trial = tmp / "sensitivity.onnx"

    def build(ratios: dict[str, float]) -> tuple[onnx.ModelProto, list, list]:
        model = onnx.ModelProto()
        model.CopyFrom(original)
        rows, left = prune_structured(
            model, None, ratios, params.criterion, set(params.exclude), set(params.exclude_op_types)
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
        raise EngineError("nothing_to_prune", f"no layer could be pruned structurally ({reasons})")
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
        "budget": (
            f"{judge.metric_name} drops by at most {params.max_accuracy_drop:g} ({params.drop_mode})"
            if judge.use_labels
            else f"output cosine >= {params.min_output_cosine:g}"
        ),
        "scan": scan,
        "steps": steps,
        "chosen_ratios": final,
        "goal_met": met,
    }
    config = {"ratios": final, "criterion": params.criterion, "sensitivity_ratios": params.sensitivity_ratios}
    return config, rows, alone + [a for a in left if a["weight"] not in final and a["weight"] not in seen_alone], block


# -- the job --------------------------------------------------------------------------------------------------
def run(inputs: JobInputs, params: PruneParams, progress: Progress) -> tuple[PruneReport, list[ArtifactOut]]:
    machine = machine_info()
    info = inputs.model_info
    warnings: list[str] = []
    out_dir = Path(inputs.out_dir)
    src = Path(inputs.model_path)
    dst = out_dir / f"model.{params.method}.onnx"
    forced = fixed_batch(info.inputs[0].shape) if info.inputs else None
    original = onnx.load(str(src))
    flow = sorted({n.op_type for n in original.graph.node if n.op_type in CONTROL_FLOW})
    if flow:
        if params.method == "simplify":
            warnings.append(
                f"the graph has control flow ({', '.join(flow)}): the optimizer simplifies inside their bodies too, "
                "and the outputs were checked only along the branches the sample inputs take"
            )
        else:
            warnings.append(f"the graph has control flow ({', '.join(flow)}): their bodies are left untouched")

    eval_feeds, labels, summary, task = eval_data(inputs, params.eval_max_samples, forced or 64, warnings)

    progress(0.05, f"pruning ({params.method})")
    started = time.perf_counter()
    layers: list[dict] = []
    alone: list[dict] = []
    difference = None
    sensitivity = None
    try:
        if params.method == "simplify":
            config = simplify_model(src, dst, params.fold_size_limit)
        elif params.method == "structured":
            config, layers, alone = structured_prune(src, dst, params, eval_feeds, out_dir.parent)
        elif params.method == "sensitivity":
            judge = _Judge(
                src, eval_feeds, labels, summary, task, pick_output(info, params.output), params, forced or 256
            )
            config, layers, alone, sensitivity = sensitivity_prune(
                src, dst, params, judge, out_dir.parent, lambda f, stage: progress(0.05 + 0.25 * f, stage)
            )
        else:
            config, layers, alone = magnitude_prune(src, dst, params)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError("prune_failed", f"{params.method} failed: {type(exc).__name__}: {str(exc)[:400]}") from None
    seconds = time.perf_counter() - started
    try:
        out_info = check_and_inspect(str(dst))
    except EngineError as exc:
        raise EngineError("prune_failed", f"the pruned model is not valid: {exc.detail}") from None
    pruned = onnx.load(str(dst))
    if [o.name for o in pruned.graph.output] != [o.name for o in original.graph.output]:
        raise EngineError("prune_failed", "the graph outputs changed; the result is refused")
    if params.method == "simplify":
        progress(0.2, "checking the simplified model against the original")
        sample = {k: v[: forced or SIMPLIFY_CHECK_SAMPLES] for k, v in eval_feeds.items()}
        difference = max_difference(src, dst, sample, [o.name for o in info.outputs], forced or 64)
        if difference > params.tolerance:
            raise EngineError(
                "prune_failed",
                f"the simplified model's outputs differ from the original's by {difference:.3g} (relative), more "
                f"than the tolerance {params.tolerance:g}: refused",
            )
        if dst.stat().st_size > src.stat().st_size * 1.001 + 1024:  # a few bytes of metadata are not folding
            raise EngineError(
                "prune_failed",
                f"simplification made the file bigger ({src.stat().st_size} -> {dst.stat().st_size} bytes); "
                "lower params.fold_size_limit",
            )
    if sensitivity is not None and not sensitivity["chosen_ratios"]:
        warnings.append(
            f"no layer can be pruned within the budget ({sensitivity['budget']}) at the ratios tried: the model is "
            "unchanged; see the scan for what each layer costs"
        )
    elif params.method in ("structured", "sensitivity"):
        warnings.append(
            "structured pruning without fine-tuning loses accuracy: see the change below; the next step is a distill "
            "job with this model as the student (params.student_model_id) and the original as the teacher"
        )
    else:
        warnings.append(
            "unstructured sparsity: the zeros are still stored densely and computed, so the raw file and the "
            "latency barely change; the gzip size shows what a sparse format or compression would save"
        )
    comparison = compare_with_params(
        src, dst, inputs, (eval_feeds, labels, summary, task), params, lambda f, stage: progress(0.3 + 0.65 * f, stage)
    )
    before_ops, after_ops = _ops(original), _ops(pruned)
    machine.load_average_1m_after = load_average()
    report = PruneReport(
        warnings=warnings,
        machine=machine,
        method=params.method,
        config=config,
        comparison=comparison,
        parameters={"original": info.parameter_count, "pruned": out_info.parameter_count},
        nonzero_parameters={"original": _nonzero(original), "pruned": _nonzero(pruned)},
        macs_per_sample={"original": info.macs_per_sample, "pruned": out_info.macs_per_sample},
        gzip_size_bytes={"original": _gzip_size(src), "pruned": _gzip_size(dst)},
        nodes={"original": len(original.graph.node), "pruned": len(pruned.graph.node)},
        op_changes={
            op: after_ops.get(op, 0) - before_ops.get(op, 0)
            for op in sorted(set(before_ops) | set(after_ops))
            if after_ops.get(op, 0) != before_ops.get(op, 0)
        },
        layers=layers,
        left_alone=alone,
        max_abs_difference=difference,
        sensitivity=sensitivity,
        output_model={"filename": dst.name, "size_bytes": dst.stat().st_size, "info": out_info.model_dump(mode="json")},
        seconds=round(seconds, 3),
    )
    artifacts = [
        ArtifactOut(
            role="model",
            filename=dst.name,
            media_type="application/octet-stream",
            register_as_model=params.method,
            model_info=out_info.model_dump(mode="json"),
        )
    ]
    return report, artifacts


KIND = JobKind(
    name="prune",
    params=PruneParams,
    report=PruneReport,
    run=run,
    validate=validate,
    roles=("eval",),
    required=(),
    queue="measure",
    threads=lambda p: max(p.threads) if p.threads else 1,
)
