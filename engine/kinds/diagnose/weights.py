"""The weights as evidence: WeightWatcher's power-law alpha of each weight matrix's spectrum (supporting evidence
only), and which layers are hidden (where dropout goes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHT_OPS = {"Gemm", "MatMul", "Conv"}
MAX_WEIGHT_LAYERS = 50


def power_law_alpha(eigs: np.ndarray, min_tail: int = 10) -> dict[str, float] | None:
    """Continuous power-law fit of the eigenvalue tail (Clauset et al.): alpha by maximum likelihood for each
    candidate x_min, x_min chosen by the smallest Kolmogorov-Smirnov distance. None when the fit cannot be made."""
    x = np.sort(eigs[eigs > eigs.max() * 1e-12])
    if x.size < 2 * min_tail:
        return None
    best = None
    for k in range(0, x.size - min_tail):
        xmin = x[k]
        tail = x[k:]
        logs = np.log(tail / xmin)
        if logs.sum() <= 0:
            continue
        alpha = 1.0 + tail.size / logs.sum()
        empirical = np.arange(tail.size) / tail.size
        model = 1.0 - (tail / xmin) ** (1.0 - alpha)
        ks = float(np.abs(empirical - model).max())
        if best is None or ks < best["ks_distance"]:
            best = {"alpha": float(alpha), "xmin": float(xmin), "ks_distance": ks, "tail_size": int(tail.size)}
    return best


def weight_matrix(array: np.ndarray) -> np.ndarray | None:
    """A 2-D view of a weight: matrices as they are, conv kernels [out, in, kh, kw] as [out, in*kh*kw].

    (WeightWatcher fits each of the kh*kw [out, in] slices instead; one matrix per layer is simpler to read.)"""
    if array.ndim == 2:
        return array
    if array.ndim >= 3:
        return array.reshape(array.shape[0], -1)
    return None


def esd_alpha(array: np.ndarray, min_dim: int = 32) -> dict[str, Any]:
    w = weight_matrix(np.asarray(array, dtype=np.float64))
    if w is None:
        return {"status": "skipped", "reason": "not a matrix"}
    if min(w.shape) < min_dim:
        return {"status": "skipped", "reason": f"too small for a spectral fit ({list(w.shape)}, needs >= {min_dim})"}
    n = max(w.shape)
    singular = np.linalg.svd(w, compute_uv=False)
    eigs = singular**2 / n  # the empirical spectral density of W^T W / N
    fit = power_law_alpha(eigs)
    if fit is None:
        return {"status": "failed", "reason": "the spectrum has too few non-zero eigenvalues"}
    return {"status": "fitted", "shape": list(w.shape), **fit}


def hidden_layers(path: Path) -> list[str]:
    """Gemm/MatMul/Conv nodes with a weight initializer, except the last one (the output layer): where dropout goes."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in WEIGHT_OPS and any(i in inits for i in n.input[1:2])]
    return [n.name or n.output[0] for n in weighted[:-1]][:20]


def weight_alphas(path: Path) -> list[dict[str, Any]]:
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    rows: list[dict[str, Any]] = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for name in node.input[:2]:
            if name in inits and len(rows) < MAX_WEIGHT_LAYERS:
                array = numpy_helper.to_array(inits[name])
                if array.dtype.kind != "f" or array.ndim < 2:
                    continue
                result = esd_alpha(array)
                if result["status"] == "fitted":
                    a = result["alpha"]
                    result["flag"] = "possibly over-trained" if a < 2 else "under-trained" if a > 6 else None
                rows.append({"layer": node.name or node.output[0], "weight": name, "op": node.op_type, **result})
    return rows
