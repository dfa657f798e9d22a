from pathlib import Path

import pytest

from engine.core.errors import EngineError
from engine.inspect import check_and_inspect
from tests import onnx_models


def test_mlp_signature_params_and_macs(tmp_path: Path) -> None:
    info = check_and_inspect(str(onnx_models.mlp(tmp_path / "m.onnx")))
    assert [(i.name, i.elem_type, i.shape) for i in info.inputs] == [("x", "float32", ["batch", 64])]
    assert [(o.name, o.shape) for o in info.outputs] == [("logits", ["batch", 10])]
    assert info.op_histogram == {"Gemm": 2, "Relu": 1}
    assert info.node_count == 3
    assert info.parameter_count == 64 * 32 + 32 + 32 * 10 + 10
    assert info.initializer_bytes == 4 * info.parameter_count
    assert info.macs_per_sample == 64 * 32 + 32 * 10
    assert info.macs_unknown_nodes == 0
    assert info.producer_name == "onnxsmith-tests"
    assert info.opset_imports[0].version == 17


def test_cnn_macs_per_sample_with_symbolic_batch(tmp_path: Path) -> None:
    info = check_and_inspect(str(onnx_models.cnn(tmp_path / "c.onnx")))
    assert info.macs_by_op_type == {"Conv": 8 * 30 * 30 * 27, "MatMul": 8 * 30 * 30 * 10}
    assert info.macs_per_sample == onnx_models.CNN_MACS


def test_fixed_batch_is_divided_out(tmp_path: Path) -> None:
    info = check_and_inspect(str(onnx_models.cnn(tmp_path / "c.onnx", batch=4)))
    assert info.macs_per_sample == onnx_models.CNN_MACS
    assert "batch of 4" in info.macs_batch_note


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: _write(p, b""), "invalid_model", "empty"),
        (lambda p: _write(p, b"\x00garbage" * 64), "invalid_model", "not an ONNX model"),
        (onnx_models.fails_checker, "invalid_model", "ONNX checker"),
        (onnx_models.fails_runtime, "invalid_model", "ONNX Runtime cannot load"),
        (lambda p: onnx_models.external_data(p, "../../etc/passwd"), "external_data", "../../etc/passwd"),
        (lambda p: onnx_models.external_data(p, "weights.bin"), "external_data", "external file"),
    ],
    ids=["empty", "random-bytes", "checker", "runtime", "external-traversal", "external-plain"],
)
def test_bad_models_are_refused_with_a_reason(tmp_path: Path, make, code: str, words: str) -> None:
    path = make(tmp_path / "bad.onnx")
    with pytest.raises(EngineError) as info:
        check_and_inspect(str(path))
    assert info.value.code == code
    assert words in info.value.detail
    assert str(tmp_path) not in info.value.detail


def _zip_checkpoint(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:  # the layout torch.save writes
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n")
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_zip_checkpoint, "torch.onnx.export"),
        (lambda p: _write(p, b"\x80\x04\x95" + b"\x00" * 200), "skl2onnx.to_onnx"),
        (lambda p: _write(p, b"\x89HDF\r\n\x1a\n" + b"\x00" * 200), "tf2onnx"),
        (lambda p: _write(p, (20).to_bytes(8, "little") + b'{"w":{"dtype":"F32"}}' + b"\x00" * 64), "safetensors"),
    ],
    ids=["torch-zip", "pickle", "keras-h5", "safetensors"],
)
def test_files_of_other_frameworks_get_a_hint_to_export_them(tmp_path: Path, make, words: str) -> None:
    with pytest.raises(EngineError) as info:
        check_and_inspect(str(make(tmp_path / "model.pt")))
    assert info.value.code == "invalid_model" and "not an ONNX model" in info.value.detail
    assert words in info.value.detail, info.value.detail


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    good = onnx_models.mlp(tmp_path / "m.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(EngineError) as info:
        check_and_inspect(str(path))
    assert info.value.code == "invalid_model"
