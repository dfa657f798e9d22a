"""4-bit weight-only quantization of a model with external data, one tensor at a time: the same model ONNX Runtime's
own MatMulNBitsQuantizer makes (it loads the whole model), with the weights over the memory bound left float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.bundle import has_external_data, model_bytes
from engine.core.errors import EngineError
from engine.kinds.quantize.streamed import weight_only_streamed
from tests import bundles

K, H, N = 100, 256, 64  # K is not a multiple of the block: the last block is padded


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((K, H)).astype(np.float32), rng.standard_normal((H, N)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y1"], name="mm2"),
        helper.make_node("MatMul", ["r", "w2"], ["y2"], name="mm2_shared"),  # the same weight twice
        helper.make_node("Add", ["y1", "y2"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", N])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {"x": x})[0]


@pytest.mark.parametrize("symmetric", [False, True])
def test_streamed_weight_only_equals_onnxruntimes_quantizer(tmp_path, symmetric) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    src = bundles.with_external_data(tmp_path / "src", _model()) / "model.onnx"
    (tmp_path / "out").mkdir()
    dst = tmp_path / "out" / "model.onnx"
    done = weight_only_streamed(
        src, dst, block_size=32, symmetric=symmetric, accuracy_level=None, exclude=set(), max_tensor_bytes=1 << 30
    )
    assert done["quantized_weights"] == 2 and done["quantized_nodes"] == 3 and done["left_in_float"] == {}
    assert has_external_data(dst)
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=symmetric, bits=4)
    reference = MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=4, block_size=32, is_symmetric=symmetric, algo_config=config
    )
    reference.process()
    onnx.save(reference.model.model, str(tmp_path / "ort.onnx"))
    x = np.random.default_rng(1).standard_normal((8, K)).astype(np.float32)
    np.testing.assert_array_equal(_run(dst, x), _run(tmp_path / "ort.onnx", x))
    # 4 bits, a float scale (and a 4-bit zero point) per 32 weights: 0.14-0.16x, plus 4 KiB alignment per tensor
    assert model_bytes(dst) < 0.25 * model_bytes(src)
    a, b = _run(src, x).ravel(), _run(dst, x).ravel()
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.98


def test_weights_over_the_memory_bound_stay_float_and_are_listed(tmp_path) -> None:
    src = bundles.with_external_data(tmp_path / "src", _model()) / "model.onnx"
    (tmp_path / "out").mkdir()
    dst = tmp_path / "out" / "model.onnx"
    done = weight_only_streamed(
        src, dst, block_size=32, symmetric=False, accuracy_level=None, exclude={"mm2_shared"},
        max_tensor_bytes=70_000,
    )  # fmt: skip
    assert done["quantized_weights"] == done["quantized_nodes"] == 1 and done["largest_weight_bytes"] == H * N * 4
    assert done["left_in_float"] == {
        "mm1": "102,400 bytes, over weight_only_max_tensor_bytes (70,000)",
        "mm2_shared": "excluded by params",
    }
    x = np.random.default_rng(1).standard_normal((8, K)).astype(np.float32)
    assert _run(dst, x).shape == (8, N)  # w1 and w2 (for mm2_shared) copied through, read from the new data file
    with pytest.raises(EngineError) as exc:  # everything excluded: nothing to quantize
        weight_only_streamed(
            src, tmp_path / "out" / "none.onnx", block_size=32, symmetric=False, accuracy_level=None,
            exclude={"mm1", "mm2", "mm2_shared"}, max_tensor_bytes=1 << 30,
        )  # fmt: skip
    assert exc.value.code == "nothing_to_quantize"
