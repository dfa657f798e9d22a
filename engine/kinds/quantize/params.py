"""The params of the `quantize` kind (its auto search reads them too)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from engine.core.kind import BatchSize, StrictParams, ThreadCount


class QuantizeParams(StrictParams):
    mode: Literal["dynamic", "static", "fp16", "weight_only", "auto"] = Field(
        description="dynamic: int8 weights, activations quantized at run time; static: int8 weights and "
        "activations calibrated on data (calibration dataset, else train); fp16: half-precision floats; "
        "weight_only: 4-bit MatMul weights in blocks (ORT's MatMulNBits; a size win on CPU, often not a speed win); "
        "auto: try the candidates that fit the model, measure each on eval and hand back the one that meets "
        "the goal (max_accuracy_drop, or min_output_cosine without labels) with the best objective"
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool | None = Field(default=None, description="Per-channel weight scales (default: static yes)")
    reduce_range: bool = Field(default=False, description="7-bit weights (for CPUs without VNNI; costs accuracy)")
    op_types: list[str] | None = Field(
        default=None, description="Op types to quantize (default: dynamic MatMul and Gemm; static all ORT supports)"
    )
    nodes_to_exclude: list[str] = Field(
        default_factory=list, description="Node names to leave in float (fp16: kept in float32)"
    )
    weight_only_algorithm: Literal["rtn", "hqq"] = Field(
        default="rtn",
        description="weight_only: rtn (round to nearest per block, ORT's default MatMulNBits quantizer) or hqq "
        "(half-quadratic quantization: scales and zero points optimized per block, no data needed)",
    )
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        default=32, description="weight_only: weights per block sharing one scale (smaller: more accurate, larger)"
    )
    weight_only_symmetric: bool = Field(default=False, description="weight_only (rtn): no zero points")
    weight_only_gather: bool = Field(
        default=True,
        description="weight_only (rtn): embedding tables (Gather) in 4-bit too (GatherBlockQuantized; the model's "
        "opset becomes 21); ORT's HQQ cannot",
    )
    weight_only_max_tensor_bytes: int = Field(
        default=2 << 30,
        ge=1 << 20,
        description="weight_only on a model with external data (quantized one tensor at a time, streamed): "
        "MatMul weights larger than this (float32 bytes) stay float; bounds the job's peak memory",
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        default=0,
        description="weight_only: MatMulNBits' compute type (0: the input's type, fp32 here; 4: int8 activations, "
        "faster on CPUs with VNNI, less accurate)",
    )
    quant_format: Literal["QDQ", "QOperator"] = Field(default="QDQ", description="static: graph format")
    activation_type: Literal["uint8", "int8"] = Field(default="uint8", description="static: activation type")
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="static: how activation ranges are chosen from the calibration data"
    )
    percentile: float = Field(default=99.999, gt=90, le=100, description="percentile calibration")
    calibration_max_samples: int = Field(default=256, ge=1, le=100000)
    pre_process: bool | None = Field(
        default=None,
        description="static: run ORT's quant_pre_process first (graph optimization: BatchNorm folded into Conv, "
        "measured 1.5x faster int8 on a ResNet); default: yes, and without it if it fails (with a warning)",
    )
    keep_io_types: bool = Field(default=True, description="fp16: keep float32 inputs and outputs")
    op_block_list: list[str] = Field(default_factory=list, description="fp16: op types to keep in float32")
    output: str | None = Field(
        default=None, description="The prediction output, which fidelity compares (default: first float output)"
    )
    pooling: Literal["auto", "none", "mean", "cls"] = Field(
        default="auto",
        description="How the output is consumed, for fidelity (the goal without labels): none (the output per "
        "sample), mean (over the positions mask_input sets, e.g. sentence embeddings), cls (the first position); "
        "auto: mean when the model has a mask input and a [batch, seq, hidden] output (an encoder), else none. "
        "Padding positions never count",
    )
    mask_input: str | None = Field(
        default=None,
        description="The mask input that marks real positions (default: an integer input named like attention_mask)",
    )
    batch_sizes: list[BatchSize] = Field(default=[1, 32], min_length=1, max_length=4)
    threads: list[ThreadCount] | None = Field(default=None, description="Thread counts to time (default: 1 and all)")
    runs: int = Field(default=50, ge=5, le=10000, description="Timed runs of each model per configuration")
    warmup_runs: int = Field(default=5, ge=0, le=1000)
    eval_max_samples: int | None = Field(default=2000, ge=1, description="Eval samples used for metrics")
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, le=1, description="auto: the most the primary metric (accuracy, r2) may drop on eval"
    )
    drop_mode: Literal["relative", "absolute"] = Field(
        default="relative", description="auto: max_accuracy_drop as a fraction of the original's value, or in points"
    )
    min_output_cosine: float = Field(
        default=0.99,
        ge=-1,
        le=1,
        description="auto: the goal when eval has no labels (cosine similarity of the prediction output to the "
        "original's); when set explicitly it is required in addition to the accuracy goal",
    )
    min_top1_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="auto: the least share of eval samples whose top-1 class agrees with the original's "
        "(classifier outputs); the goal without labels when given (min_output_cosine then only if set explicitly), "
        "required in addition to the accuracy goal with labels",
    )
    objective: Literal["latency", "size"] = Field(
        default="latency",
        description="auto: what the chosen model minimizes (latency at trial_batch_size, 1 thread); a trial must "
        "beat the original by more than the tie band (10% latency, 2% size), else the original is kept",
    )
    auto_modes: list[Literal["static", "dynamic", "fp16", "weight_only"]] = Field(
        default=["static", "dynamic", "fp16", "weight_only"],
        min_length=1,
        description="auto: the modes the search may try (fp16 is a latency candidate only on CPUs with native fp16 "
        "arithmetic, always one for objective size; weight_only one for objective size on MatMul-heavy models)",
    )
    max_trials: int = Field(default=10, ge=1, le=100, description="auto: most configurations tried")
    max_seconds: float = Field(
        default=900, gt=0, description="auto: time budget of the search (the job's time limit still applies)"
    )
    trial_runs: int = Field(default=30, ge=5, le=1000, description="auto: timed runs per trial (1 thread)")
    trial_batch_size: BatchSize = Field(
        default=1,
        description="auto: the batch size trials are timed at, which the latency objective means (a model with a "
        "fixed batch is timed at its own)",
    )
    error_table: bool = Field(
        default=True, description="static QDQ: per-tensor error (ORT's qdq_loss_debug) on a few calibration samples"
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v: list[int]) -> list[int]:
        return sorted(set(v))
