"""Fidelity on what the user consumes (engine.measure.fidelity): pooling over the mask, padding left out,
per-sample cosine, top-1/top-5 agreement, and defaults from the model's signature."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.errors import EngineError
from engine.inspect import check_and_inspect
from engine.measure.fidelity import FidelitySpec, default_spec, fidelity, measure
from tests import onnx_models


def _encoder_outputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((8, 16, 32))
    mask = np.ones((8, 16), np.int64)
    mask[:, 10:] = 0  # six padding positions per sample
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    out[:, 10:] = rng.standard_normal((8, 6, 32)) * 100  # garbage where nothing is consumed
    return ref, out, {"attention_mask": mask}


def test_padding_positions_never_count() -> None:
    ref, out, feeds = _encoder_outputs()
    for pooling in ("mean", "none"):
        fid = measure(FidelitySpec("h", pooling, "attention_mask"), ref, out, feeds)  # type: ignore[arg-type]
        assert fid.cosine_mean > 0.999 and fid.cosine_min > 0.999, pooling
    whole = measure(FidelitySpec("h", "none", None), ref, out, feeds)  # the raw output, padding included
    assert whole.cosine < 0.2
    cls = measure(FidelitySpec("h", "cls", "attention_mask"), ref, out, feeds)
    assert cls.compared == "h, first position (CLS)" and cls.cosine_mean > 0.999


def test_mean_pooling_is_the_mask_weighted_mean() -> None:
    ref, _, feeds = _encoder_outputs()
    pooled, mask = FidelitySpec("h", "mean", "attention_mask").consumed(ref, feeds)
    assert mask is None and pooled.shape == (8, 32)
    np.testing.assert_allclose(pooled, ref[:, :10].mean(axis=1))


def test_per_sample_cosine_finds_the_one_bad_sample() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((100, 10))
    out = ref.copy()
    out[7] = -ref[7]  # one sample inverted
    fid = fidelity("logits", ref, out)
    assert fid.cosine_min == pytest.approx(-1.0) and fid.cosine_mean == pytest.approx(0.98)
    assert fid.top1_agreement == pytest.approx(0.99)
    assert fid.top5_agreement == pytest.approx(0.99)  # the inverted sample's top-1 is its last: not in the top 5


def test_top1_tells_apart_what_cosine_cannot() -> None:
    """Random-weight classifier logits: a small uniform shift keeps the cosine at 0.9999 but flips close calls."""
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((1000, 1000)) * 0.01 + 10
    out = ref + rng.standard_normal(ref.shape) * 0.003
    fid = fidelity("logits", ref, out)
    assert fid.cosine > 0.9999 and fid.top1_agreement < 0.9 and fid.top5_agreement > fid.top1_agreement


def test_non_finite_outputs_score_zero_for_their_samples() -> None:
    ref = np.ones((4, 3))
    out = ref.copy()
    out[0, 0] = np.inf
    fid = fidelity("y", ref, out)
    assert fid.non_finite_values == 1 and fid.cosine_min == 0.0 and fid.cosine_mean == pytest.approx(0.75)


def test_defaults_come_from_the_signature(tmp_path) -> None:
    enc = check_and_inspect(str(onnx_models.encoder(tmp_path / "enc.onnx")))
    spec = default_spec(enc, "last_hidden_state")
    assert (spec.pooling, spec.mask_input) == ("mean", "attention_mask") and "encoder" in spec.reason
    assert default_spec(enc, "last_hidden_state", "none").mask_input == "attention_mask"  # padding still left out
    mlp = check_and_inspect(str(onnx_models.mlp(tmp_path / "mlp.onnx")))
    assert default_spec(mlp, "logits") == FidelitySpec("logits", "none", None, "the output as it is")
    with pytest.raises(EngineError, match="rank 2"):
        default_spec(mlp, "logits", "mean")
    with pytest.raises(EngineError, match="not an input of the model"):
        default_spec(enc, "last_hidden_state", "mean", "token_type_ids")
