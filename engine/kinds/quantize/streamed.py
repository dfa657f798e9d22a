"""4-bit weight-only quantization of a model with external data, one tensor at a time (issue 20).

ORT's MatMulNBitsQuantizer loads the whole model into memory (a 1B-parameter decoder is 4 GB of fp32 before any
copy). Here the graph is read without its weights; each MatMul weight (a 2-D float32 initializer) is read alone
from its data file, quantized by ONNX Runtime's own blockwise RTN kernel (the one its quantizer calls,
`quantize_matmul_4bits`), written to the output's data file and dropped; every other tensor is copied through in
chunks. Peak memory: about the largest quantized weight (float32, padded to whole blocks) plus its packed form,
bounded by `max_tensor_bytes` (larger weights stay float, copied through and listed). The output is always saved
with external data (one data file, offsets aligned to 4 KiB so ONNX Runtime can map it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from engine.bundle import entries, external_span, external_tensors
from engine.core.errors import EngineError, ErrorCode
from engine.inspect import attribute

ALIGN = 4096
CHUNK = 64 << 20


class DataFile:
    """The output's external data file: tensors appended at 4 KiB-aligned offsets."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        self.out = open(path, "wb")  # noqa: SIM115  (closed by close())
        self.offset = 0

    def _start(self) -> int:
        pad = -self.offset % ALIGN
        if pad:
            self.out.write(b"\0" * pad)
            self.offset += pad
        return self.offset

    def _point(self, tensor: TensorProto, start: int) -> TensorProto:
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", self.name), ("offset", str(start)), ("length", str(self.offset - start))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def add(self, name: str, array: np.ndarray) -> TensorProto:
        start = self._start()
        data = np.ascontiguousarray(array)
        self.out.write(data.tobytes())
        self.offset += data.nbytes
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(data.dtype), dims=list(data.shape))
        return self._point(tensor, start)

    def copy(self, tensor: TensorProto, source: Path, offset: int, length: int) -> TensorProto:
        """A tensor's bytes from its source data file, in chunks."""
        start = self._start()
        with open(source, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    why = f"tensor {tensor.name!r}: its data file ends early"
                    raise EngineError(ErrorCode.INVALID_EXTERNAL_DATA, why)
                self.out.write(chunk)
                left -= len(chunk)
        self.offset += length
        copied = TensorProto()
        copied.CopyFrom(tensor)
        return self._point(copied, start)

    def close(self) -> None:
        self.out.close()


def _read_float(tensor: TensorProto, base: Path) -> np.ndarray:
    """A float32 initializer's values, from its data file (one tensor's bytes) or inline."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return onnx.numpy_helper.to_array(tensor)
    source, offset, _ = external_span(entries(tensor), base)
    count = int(np.prod(tensor.dims))
    with open(source, "rb") as f:
        f.seek(offset)
        values = np.fromfile(f, dtype=np.float32, count=count)
    if values.size != count:
        raise EngineError(ErrorCode.INVALID_EXTERNAL_DATA, f"tensor {tensor.name!r}: its data file ends early")
    return values.reshape(list(tensor.dims))


def _quantize(weight: np.ndarray, block_size: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX Runtime's blockwise 4-bit RTN of a [K, N] weight: (packed [N, blocks, block/2], scales [N * blocks],
    zero points [N * ceil(blocks / 2)])."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rows, cols = weight.shape
    blocks = (rows + block_size - 1) // block_size
    if blocks * block_size != rows:
        weight = np.pad(weight, ((0, blocks * block_size - rows), (0, 0)))
    packed = np.zeros((cols, blocks, block_size // 2), dtype=np.uint8)
    zero_points = np.zeros((cols, (blocks + 1) // 2), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=np.float32)
    quantize_matmul_4bits(packed, np.ascontiguousarray(weight), scales, zero_points, block_size, cols, rows, symmetric)
    return packed, scales.reshape(-1), zero_points.reshape(-1)


class _Streamer:
    """The state of one streamed quantization: the data file, the 4-bit weights made so far (a weight shared by
    several nodes is quantized once), what was left in float and why."""

    def __init__(self, base: Path, data: DataFile, block_size: int, symmetric: bool, accuracy_level: int | None):
        self.base, self.data = base, data
        self.block_size, self.symmetric, self.accuracy_level = block_size, symmetric, accuracy_level
        self.made: list[TensorProto] = []
        self.done: dict[str, list[str]] = {}
        self.left: dict[str, str] = {}
        self.largest = self.nodes = 0

    def weight(self, tensor: TensorProto, transposed: bool) -> list[str]:
        """The names of the 4-bit weight, its scales (and zero points), made on first use."""
        key = tensor.name + ("_T" if transposed else "")
        if key not in self.done:
            weight = _read_float(tensor, self.base)
            weight = np.ascontiguousarray(weight.T) if transposed else weight
            self.largest = max(self.largest, weight.nbytes)
            packed, scales, zero_points = _quantize(weight, self.block_size, self.symmetric)
            del weight
            self.done[key] = [key + "_Q4", key + "_scales"] + ([] if self.symmetric else [key + "_zero_points"])
            self.made += [self.data.add(key + "_Q4", packed), self.data.add(key + "_scales", scales)]
            if not self.symmetric:
                self.made.append(self.data.add(key + "_zero_points", zero_points))
        return self.done[key]

    def replace(self, node: onnx.NodeProto, tensor: TensorProto) -> list[onnx.NodeProto]:
        """MatMul -> MatMulNBits; Gemm (no transA, alpha = beta = 1) -> MatMulNBits + Add of its bias."""
        transposed = node.op_type == "Gemm" and attribute(node, "transB", 0) == 1
        rows, cols = (tensor.dims[1], tensor.dims[0]) if transposed else tuple(tensor.dims)
        attrs: dict[str, Any] = {"K": int(rows), "N": int(cols), "bits": 4, "block_size": self.block_size}
        if self.accuracy_level:
            attrs["accuracy_level"] = self.accuracy_level
        bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else ""
        out = node.output[0] + "_nobias" if bias else node.output[0]
        inputs = [node.input[0], *self.weight(tensor, transposed)]
        made = [helper.make_node("MatMulNBits", inputs, [out], domain="com.microsoft", **attrs)]
        made[0].name = (node.name + "_Q4") if node.name else ""
        if bias:
            made.append(helper.make_node("Add", [out, bias], [node.output[0]], name=(node.name or out) + "_bias"))
        self.nodes += 1
        return made


def weight_only_streamed(
    src: Path,
    dst: Path,
    *,
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
    exclude: set[str],
    max_tensor_bytes: int,
) -> dict[str, Any]:
    """Quantize the MatMul (and plain Gemm) weights of `src` (a model with external data) into `dst` (its .onnx
    file; the data file beside it). Returns what was done: counts, bytes, the weights left in float and why."""
    model = onnx.load(str(src), load_external_data=False)
    external_in = sum(external_span(e, src.parent)[2] for _, e in external_tensors(model))
    inits = {t.name: t for t in model.graph.initializer}
    data = DataFile(dst.with_name(dst.name + ".data"))
    streamer = _Streamer(src.parent, data, block_size, symmetric, accuracy_level)
    try:
        nodes: list[onnx.NodeProto] = []
        for node in model.graph.node:
            tensor = inits.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
            why = _skip_reason(node, tensor, exclude, max_tensor_bytes) if tensor is not None else "not a weight"
            if tensor is not None and why:
                streamer.left[node.name or tensor.name] = why
            nodes += [node] if why else streamer.replace(node, tensor)  # type: ignore[arg-type]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {i for n in nodes for i in n.input}
        kept = [_carry(t, src.parent, data) for t in model.graph.initializer if t.name in used]
    finally:
        data.close()
    if not streamer.nodes:
        left = streamer.left
        raise EngineError(
            ErrorCode.NOTHING_TO_QUANTIZE,
            "weight_only: no MatMul or Gemm with a constant 2-D float32 weight to quantize"
            + (f" ({next(iter(left))}: {next(iter(left.values()))})" if left else ""),
        )
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + streamer.made)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return {
        "bits": 4,
        "algorithm": "rtn",
        "block_size": block_size,
        "symmetric": symmetric,
        "accuracy_level": accuracy_level,
        "streamed": True,
        "quantized_weights": len(streamer.done),
        "quantized_nodes": streamer.nodes,
        "largest_weight_bytes": streamer.largest,
        "left_in_float": streamer.left,
        "external_bytes_in": external_in,
        "external_bytes_out": data.offset,
    }


def _carry(tensor: TensorProto, base: Path, data: DataFile) -> TensorProto:
    """A tensor the output keeps: its external bytes copied into the output's data file; inline ones as they are."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return tensor
    return data.copy(tensor, *external_span(entries(tensor), base))


def _skip_reason(node: onnx.NodeProto, tensor: TensorProto, exclude: set[str], max_tensor_bytes: int) -> str:
    if node.name in exclude:
        return "excluded by params"
    if node.op_type == "Gemm" and (
        attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0 or attribute(node, "beta", 1.0) != 1.0
    ):
        return "a Gemm with transA, alpha or beta (MatMulNBits computes A @ B only)"
    if tensor.data_type != TensorProto.FLOAT or len(tensor.dims) != 2:
        return "not a 2-D float32 weight"
    size = int(np.prod(tensor.dims)) * 4
    if size > max_tensor_bytes:
        return f"{size:,} bytes, over weight_only_max_tensor_bytes ({max_tensor_bytes:,})"
    return ""
