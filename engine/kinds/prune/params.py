"""The params of the `prune` kind."""

from __future__ import annotations

from typing import Literal

import onnx
from pydantic import Field, field_validator

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import BatchSize, Ratio, StrictParams, ThreadCount


class PruneParams(StrictParams):
    method: Literal["simplify", "magnitude", "structured", "sensitivity"] = Field(
        description="simplify: graph clean-up that keeps the outputs; magnitude: zero the smallest weights; "
        "structured: remove whole neurons and conv channels; sensitivity: prune each layer alone at several "
        "ratios, then structured-prune with the per-layer ratios that remove the most MACs within max_accuracy_drop"
    )
    sensitivity_ratios: list[Ratio] = Field(
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
    ratios: dict[str, Ratio] | None = Field(
        default=None, description="magnitude: per-layer fractions keyed by weight initializer name"
    )
    scope: Literal["per_layer", "global"] = Field(
        default="per_layer", description="magnitude: each layer to `ratio`, or one threshold across all layers"
    )
    coupled: Literal["group", "leave"] = Field(
        default="group",
        description="structured/sensitivity: layers whose channels are coupled (a residual Add, attention's "
        "query/key/value) are pruned together as one dependency group, or left whole (layer-by-layer pruning, "
        "as before dependency groups: for comparison)",
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
    batch_sizes: list[BatchSize] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[ThreadCount] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000)
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1)

    @field_validator("sensitivity_ratios")
    @classmethod
    def _sens(cls, v: list[float]) -> list[float]:
        return sorted(set(v))

    def check_names(self, model: onnx.ModelProto) -> None:
        """Names in exclude must be weights or nodes of the model: a typo would otherwise prune that layer."""
        known = {t.name for t in model.graph.initializer} | {n.name for n in model.graph.node if n.name}
        unknown = sorted(set(self.exclude) - known)
        if unknown:
            raise EngineError(
                ErrorCode.UNKNOWN_LAYER, f"params.exclude names no weight or node of the model: {unknown[:10]}"
            )
