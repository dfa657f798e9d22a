"""`simplify`: the onnxscript optimizer (constant folding with a size limit, dead-node and unused-initializer
removal, identity/no-op elimination, shape inference) followed by onnxscript's rewrite rules that fold
BatchNormalization into Conv/ConvTranspose/Gemm and fuse MatMul+Add into Gemm. onnxscript is chosen over
onnxslim and onnxoptimizer because it is maintained by the ONNX/PyTorch exporter team, its constant folding
takes explicit input/output size limits, and its rules are individually selectable. The result is checked
numerically against the original on sample inputs (the kind refuses a result that differs or a file that grew)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from engine.core.errors import EngineError, ErrorCode
from engine.measure.data import feeds_for
from engine.runtime import make_session, run_batched

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
            raise EngineError(
                ErrorCode.PRUNE_FAILED, f"output {name!r} changed shape: {list(ya.shape)} -> {list(yb.shape)}"
            )
        if ya.size:
            scale = max(1.0, float(np.abs(ya).max()))
            worst = max(worst, float(np.abs(ya - yb).max()) / scale)
    return worst
