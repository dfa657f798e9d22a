"""Per-tensor error of a QDQ model against the float model (ONNX Runtime's qdq_loss_debug), as SQNR in dB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.kinds.quantize.calibration import Reader

ERROR_TABLE_SAMPLES = 8  # collecting every intermediate tensor is memory-hungry: a few samples only
ERROR_TABLE_ROWS = 20
MAX_SQNR_DB = 150.0


def _activations(float_path: Path, quant_path: Path, reader: Reader, tmp: Path) -> tuple[dict, dict]:
    """Every intermediate tensor of both models on the reader's samples (ORT's qdq_loss_debug collection):
    ({name: [arrays]} of the float model, the same of the quantized one)."""
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    aug_f, aug_q = tmp / "float.aug.onnx", tmp / "quant.aug.onnx"
    try:
        modify_model_output_intermediate_tensors(str(float_path), str(aug_f))
        modify_model_output_intermediate_tensors(str(quant_path), str(aug_q))
        return collect_activations(str(aug_f), reader), collect_activations(str(aug_q), reader)
    finally:
        for path in (aug_f, aug_q):
            path.unlink(missing_ok=True)


def _activation_errors(float_path: Path, qdq_path: Path, reader: Reader, tmp: Path) -> dict[str, dict[str, float]]:
    """ORT's qdq_loss_debug: for every float tensor, SQNR of the QDQ model against the float model."""
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    acts_f, acts_q = _activations(float_path, qdq_path, reader, tmp)
    return compute_activation_error(create_activation_matching(acts_q, acts_f))


def activation_sqnr(float_path: Path, qdq_path: Path, reader: Reader, tmp: Path) -> dict[str, float]:
    """{tensor: SQNR dB vs float} on the first ERROR_TABLE_SAMPLES calibration samples (quantize_auto's input)."""
    few = Reader({k: v[:ERROR_TABLE_SAMPLES] for k, v in reader.feeds.items()}, reader.batch, ERROR_TABLE_SAMPLES)
    errors = _activation_errors(float_path, qdq_path, few, tmp)
    return {name: e["xmodel_err"] for name, e in errors.items() if "xmodel_err" in e}


def shared_tensor_sqnr(float_path: Path, quant_path: Path, reader: Reader, tmp: Path) -> dict[str, float]:
    """{tensor: SQNR dB vs float} for every tensor the two models share by name (dynamic quantization keeps the
    names of the outputs it replaces), on the reader's samples; an exact tensor scores MAX_SQNR_DB."""
    acts_f, acts_q = _activations(float_path, quant_path, reader, tmp)
    out = {}
    for name, fs in acts_f.items():
        qs = acts_q.get(name)
        if qs is None or len(qs) != len(fs):
            continue
        f = np.concatenate([np.asarray(a, np.float64).ravel() for a in fs])
        q = np.concatenate([np.asarray(a, np.float64).ravel() for a in qs])
        if f.shape != q.shape or f.dtype.kind != "f" or not np.isfinite(q).all():
            continue
        noise, signal = float(((f - q) ** 2).sum()), float((f**2).sum())
        out[name] = MAX_SQNR_DB if noise == 0 or signal == 0 else min(MAX_SQNR_DB, 10 * np.log10(signal / noise))
    return out


def layer_errors(float_path: Path, qdq_path: Path, feeds: dict[str, np.ndarray], batch: int, tmp: Path) -> dict:
    """Per-tensor SQNR of the QDQ model against the float model (ORT's qdq_loss_debug), worst first."""
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    errors = _activation_errors(float_path, qdq_path, Reader(feeds, batch, ERROR_TABLE_SAMPLES), tmp)
    activations = sorted(
        (
            {"tensor": name, "sqnr_db": round(e["xmodel_err"], 2), "qdq_sqnr_db": round(e["qdq_err"], 2)}
            for name, e in errors.items()
            if "xmodel_err" in e
        ),
        key=lambda r: float(r["sqnr_db"]),  # type: ignore[arg-type]  # the rows' values are numbers or names
    )
    matching = create_weight_matching(str(float_path), str(qdq_path))
    nonzero = {k: v for k, v in matching.items() if np.any(v["float"])}  # an all-zero tensor is exact
    weights = sorted(
        ({"weight": name, "sqnr_db": round(v, 2)} for name, v in compute_weight_error(nonzero).items()),
        key=lambda r: r["sqnr_db"],
    )
    return {
        "samples": min(ERROR_TABLE_SAMPLES, next(iter(feeds.values())).shape[0]),
        "activations": activations[:ERROR_TABLE_ROWS],
        "weights": weights[:ERROR_TABLE_ROWS],
    }
