"""Check an untrusted ONNX file and describe it: signature, ops, parameters, MACs per sample.

`check_and_inspect` is meant to run inside `engine.sandbox.run_isolated` (a child process with limits).
"""

from __future__ import annotations

import gc
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, helper
from pydantic import BaseModel, Field

from engine.core.errors import EngineError, ErrorCode
from engine.runtime import session_options
from engine.sandbox import out_of_memory

# Ops whose multiply-accumulates are counted: op type -> (index of the data input, index of the weight input).
_MAC_OPS = {
    "Conv": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "ConvTranspose": (0, 1),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "MatMulNBits": (0, 1),  # counted as the MatMul it replaces (the light model rewrites it, see _light_model)
}
_SMALL_INITIALIZER_BYTES = 4096  # kept for shape inference (Reshape targets etc.); larger ones become inputs


PROBABILITY_MAPS = ("sequence(map(int64,float32))", "sequence(map(string,float32))")


class TensorSpec(BaseModel):
    name: str
    elem_type: str = Field(
        description="numpy-style element type, e.g. float32; 'sequence'/'map' for non-tensors, "
        "'sequence(map(int64,float32))' for a ZipMap's per-sample class probabilities"
    )

    @property
    def probability_map(self) -> bool:
        """A ZipMap output ({class: probability} per sample): read as a [samples, classes] array (runtime.py)."""
        return self.elem_type in PROBABILITY_MAPS

    shape: list[int | str | None] | None = Field(
        description="Dimensions: int if fixed, str if symbolic (e.g. 'batch'), null if unknown; null if rank unknown"
    )


class OpsetImport(BaseModel):
    domain: str
    version: int


class ModelInfo(BaseModel):
    ir_version: int
    opset_imports: list[OpsetImport]
    producer_name: str
    producer_version: str
    graph_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    op_histogram: dict[str, int] = Field(description="Node count per op type, subgraphs included")
    node_count: int
    parameter_count: int = Field(description="Elements in all initializers")
    initializer_bytes: int = Field(description="Bytes of initializer data (element count x element size)")
    macs_per_sample: int | None = Field(
        description="Multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul (and their quantized forms) "
        "for one sample; null when no such node has known shapes"
    )
    macs_by_op_type: dict[str, int]
    macs_unknown_nodes: int = Field(description="Counted op nodes whose shapes could not be inferred")
    external_data_bytes: int = Field(
        default=0, description="Bytes of weights kept in external data files (a bundle); 0 for a single file"
    )
    runtime_checked: bool = Field(
        default=True,
        description="ONNX Runtime created a session from the upload. False for bundles over "
        "inspect_runtime_max_bytes: the graph, the checker and every external location were checked, the "
        "weights were not loaded (the first job that runs the model loads them)",
    )
    macs_batch_note: str


def ml_operators(info: ModelInfo) -> list[str]:
    """The model's ops of the ai.onnx.ml domain (scikit-learn converters: LinearClassifier, TreeEnsemble*, Scaler,
    ZipMap...): their weights are node attributes, not initializers, so only the kinds that run the model through
    ONNX Runtime (evaluate, diagnose, benchmark, compare, quantize) can work on them."""
    return sorted(op.split(":")[-1] for op in info.op_histogram if op.startswith("ai.onnx.ml:"))


ML_HINT = "evaluate, diagnose, benchmark and compare run such models"


def refuse_attribute_weights(info: ModelInfo, code: ErrorCode, what: str) -> None:
    """A 422 at submit for a scikit-learn-style graph (ai.onnx.ml operators, no Conv/Gemm/MatMul): its weights
    are node attributes that no compression reaches. `what`: why the kind has nothing to do with it."""
    ml = ml_operators(info)
    if ml and not {"Conv", "Gemm", "MatMul"} & set(info.op_histogram):
        raise EngineError(
            code,
            f"the model's ops {ml[:10]} are scikit-learn-style ai.onnx.ml operators whose weights are node "
            f"attributes, and it has no Conv/Gemm/MatMul: {what} ({ML_HINT})",
        )


def refuse_non_tensor_outputs(info: ModelInfo, what: str) -> None:
    """A 422 at submit when an output is a sequence or map (a ZipMap): `what` cannot rewrite such graphs."""
    odd = [f"{o.name} ({o.elem_type})" for o in info.outputs if o.elem_type.startswith(("sequence", "map"))]
    if odd:
        raise EngineError(
            ErrorCode.UNSUPPORTED,
            f"{what} cannot rewrite a graph with sequence or map outputs: {odd} (a scikit-learn ZipMap: export with "
            "skl2onnx's options={id(model): {'zipmap': False}} for a probability tensor)",
        )


def refuse_unsupported_ops(info: ModelInfo, supported: set[str], what: str) -> None:
    """A 422 at submit naming the ops `what` (e.g. 'the training interpreter') cannot handle."""
    missing = sorted(set(info.op_histogram) - supported)  # ops of other domains are keyed "domain:op"
    if not missing:
        return
    ml = ml_operators(info)
    hint = (
        f"; {ml} are scikit-learn-style ai.onnx.ml operators whose weights are node attributes: {ML_HINT}" if ml else ""
    )
    raise EngineError(ErrorCode.UNSUPPORTED_OP, f"{what} does not support the model's ops {missing[:20]}{hint}")


def attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """A node's attribute value, or `default` when the node does not set it."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _elem_type_name(elem_type: int) -> str:
    if elem_type == TensorProto.FLOAT:
        return "float32"
    if elem_type == TensorProto.DOUBLE:
        return "float64"
    return TensorProto.DataType.Name(elem_type).lower()


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = vi.type
    kind = t.WhichOneof("value")
    if kind == "sequence_type" and t.sequence_type.elem_type.WhichOneof("value") == "map_type":
        m = t.sequence_type.elem_type.map_type  # ZipMap (scikit-learn converters): one {class: probability} per sample
        key = TensorProto.DataType.Name(m.key_type).lower()
        value = m.value_type.tensor_type.elem_type if m.value_type.WhichOneof("value") == "tensor_type" else 0
        return TensorSpec(name=vi.name, elem_type=f"sequence(map({key},{_elem_type_name(value)}))", shape=None)
    if kind != "tensor_type":
        return TensorSpec(name=vi.name, elem_type=(kind or "unknown").replace("_type", ""), shape=None)
    tt = t.tensor_type
    shape: list[int | str | None] | None = None
    if tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
    return TensorSpec(name=vi.name, elem_type=_elem_type_name(tt.elem_type), shape=shape)


def _subgraphs(node: onnx.NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def _all_nodes(graph: GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from _all_nodes(sub)


def all_tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor that can carry data: initializers, sparse initializers, tensor attributes."""

    def graph_tensors(graph: GraphProto) -> Iterator[tuple[str, TensorProto]]:
        for t in graph.initializer:
            yield t.name, t
        for st in graph.sparse_initializer:
            yield st.values.name, st.values
            yield st.indices.name, st.indices
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: onnx.NodeProto) -> Iterator[tuple[str, TensorProto]]:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield f"{node.name or node.op_type}.{attr.name}", attr.t
            elif attr.type == AttributeProto.TENSORS:
                for t in attr.tensors:
                    yield f"{node.name or node.op_type}.{attr.name}", t
            elif attr.type == AttributeProto.SPARSE_TENSOR:
                yield f"{node.name or node.op_type}.{attr.name}", attr.sparse_tensor.values
            elif attr.type == AttributeProto.GRAPH:
                yield from graph_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from graph_tensors(sub)

    yield from graph_tensors(model.graph)
    for func in model.functions:
        for node in func.node:
            yield from node_tensors(node)


def refuse_external_data(model: ModelProto) -> None:
    for name, tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise EngineError(
                ErrorCode.EXTERNAL_DATA,
                f"tensor {name!r} keeps its data in an external file ({location!r}); models with external "
                "data are uploaded as one .zip or .tar archive holding the .onnx file and its data files (or "
                "saved as one file, onnx.save(model, path, save_as_external_data=False), up to 2 GB)",
            )


def _scrub(message: str, path: Path) -> str:
    """Error texts from onnx/ORT quote the file path; never show a server path to a client."""
    for p in {str(path), str(path.resolve()), str(path.parent), str(path.resolve().parent)}:
        message = message.replace(p, "<upload>")
    return message.strip().splitlines()[0][:500] if message.strip() else message


_TORCH_HINT = "export it to ONNX first: torch.onnx.export(model, example_inputs, 'model.onnx')"
_OTHER_FORMATS = (  # (first bytes, what the file looks like, how to get an ONNX model from it)
    (b"PK\x03\x04", "a zip archive, as PyTorch saves .pt/.pth checkpoints", _TORCH_HINT),
    (b"\x80", "a Python pickle (a PyTorch checkpoint, or a scikit-learn model saved with pickle/joblib)",
     f"{_TORCH_HINT}; a scikit-learn model: skl2onnx.to_onnx(model, X[:1])"),
    (b"\x89HDF", "an HDF5 file, as Keras saves .h5 models", "convert it with tf2onnx (python -m tf2onnx.convert)"),
    (b"TFL3", "a TensorFlow Lite model", "convert it with tf2onnx (python -m tf2onnx.convert --tflite)"),
)  # fmt: skip


def _format_hint(path: Path) -> str:
    """For a file that is not ONNX: what it looks like and how to export an ONNX model from it, if we can tell."""
    with path.open("rb") as f:
        head = f.read(16)
    for magic, looks_like, how in _OTHER_FORMATS:
        if head.startswith(magic) or (magic == b"TFL3" and head[4:8] == magic):
            return f"; the file looks like {looks_like}: {how}"
    if len(head) >= 9 and head[8:9] == b"{":
        return f"; the file looks like safetensors weights (weights without a graph): {_TORCH_HINT}"
    return ""


def load_untrusted(path: Path) -> ModelProto:
    size = path.stat().st_size
    if size == 0:
        raise EngineError(ErrorCode.INVALID_MODEL, "the file is empty")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        if out_of_memory(exc):  # the parser's arena could not grow under the child's memory limit
            raise MemoryError(_scrub(str(exc), path)) from None
        raise EngineError(
            ErrorCode.INVALID_MODEL,
            f"the file is not an ONNX model (protobuf parse failed: {_scrub(str(exc), path)}){_format_hint(path)}",
        ) from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise EngineError(
            ErrorCode.INVALID_MODEL,
            f"the file is not an ONNX model (no graph or no IR version: not an ONNX protobuf){_format_hint(path)}",
        )
    return model


def check_model(path: Path) -> None:
    """onnx.checker on the file (by path: the C++ side loads it itself, no Python-side serialized copy).
    Call only after `refuse_external_data`."""
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise EngineError(
            ErrorCode.INVALID_MODEL, f"the model fails the ONNX checker: {_scrub(str(exc), path)}"
        ) from None


def check_runtime(path: Path, threads: int = 1) -> None:
    """The last gate: ONNX Runtime can create a CPU session (kernels exist for every node).

    Graph optimizations and weight prepacking are off: they are not needed to know that the model loads,
    and they cost a third of the check time on large models (see BENCHMARKS.md).
    """
    import onnxruntime as ort

    options = session_options(threads, optimize=False, prepack=False)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types
        text = _scrub(str(exc), path)
        if out_of_memory(exc):  # the sandbox child's memory limit, not an invalid model
            raise MemoryError(text) from None
        raise EngineError(ErrorCode.INVALID_MODEL, f"ONNX Runtime cannot load the model: {text}") from None


def _numel(dims: list[int]) -> int:
    return math.prod(int(d) for d in dims)


def _tensor_bytes(t: TensorProto) -> int:
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return sum(len(s) for s in t.string_data)
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 1
    return _numel(list(t.dims)) * itemsize


def _light_model(model: ModelProto) -> tuple[ModelProto, int, str]:
    """A copy without big initializer data (they become typed inputs) and with batch dims set to 1.

    Returns the copy, the batch size the numbers are divided by, and a note saying what was assumed.
    """
    g = model.graph
    input_names = {i.name for i in g.input}
    small, extra_inputs = [], []
    for t in g.initializer:
        if _tensor_bytes(t) <= _SMALL_INITIALIZER_BYTES:
            small.append(t)
        elif t.name not in input_names:
            extra_inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    initializer_names = {t.name for t in g.initializer}
    inputs = []
    batch, note = 1, "symbolic batch dimensions were set to 1"
    first = True
    for vi in g.input:
        vi2 = onnx.ValueInfoProto()
        vi2.CopyFrom(vi)
        if vi.name not in initializer_names and vi2.type.HasField("tensor_type"):
            dims = vi2.type.tensor_type.shape.dim
            if len(dims) > 0:
                if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                    if first and dims[0].dim_value > 1:
                        batch = int(dims[0].dim_value)
                        note = f"the model has a fixed batch of {batch}; totals were divided by {batch}"
                else:
                    dims[0].Clear()
                    dims[0].dim_value = 1
            first = False
        inputs.append(vi2)
    nodes = []
    for node in g.node:  # shape inference does not know MatMulNBits: count it as the MatMul with a [K, N] weight
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
            attrs = {a.name: a.i for a in node.attribute}
            if "K" in attrs and "N" in attrs:
                weight = f"{node.input[1]}__as_matmul"
                extra_inputs.append(
                    helper.make_tensor_value_info(weight, onnx.TensorProto.FLOAT, [attrs["K"], attrs["N"]])
                )
                node = helper.make_node("MatMul", [node.input[0], weight], [node.output[0]], name=node.name)
        nodes.append(node)
    graph = helper.make_graph(nodes, g.name or "graph", inputs + extra_inputs, list(g.output), initializer=small)
    light = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    light.functions.extend(model.functions)
    return light, batch, note


def _shapes(model: ModelProto) -> dict[str, list[int] | None]:
    shapes: dict[str, list[int] | None] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        spec = _spec(vi)
        if spec.shape is not None and all(isinstance(d, int) for d in spec.shape):
            shapes[vi.name] = [int(d) for d in spec.shape]  # type: ignore[arg-type]
        else:
            shapes.setdefault(vi.name, None)
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int] | None]) -> int | None:
    data_idx, weight_idx = _MAC_OPS[node.op_type]
    if len(node.input) <= weight_idx or not node.output:
        return None
    x = shapes.get(node.input[data_idx])
    w = shapes.get(node.input[weight_idx])
    y = shapes.get(node.output[0])
    if x is None or w is None or y is None:
        return None
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return _numel(y) * _numel(w[1:]) if len(y) >= 2 and len(w) >= 2 else None
    if op == "ConvTranspose":
        return _numel(x) * _numel(w[1:]) if len(x) >= 2 and len(w) >= 2 else None
    if op == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        if len(x) != 2:
            return None
        k = x[0] if trans_a else x[1]
        return _numel(y) * k
    # MatMul family: [..., M, K] x [..., K, N]
    if not x:
        return None
    return _numel(y) * x[-1]


def _count_macs(model: ModelProto) -> tuple[int | None, dict[str, int], int, str]:
    light, batch, note = _light_model(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:  # shape inference is best effort; counts then cover what is known
        inferred = light
    shapes = _shapes(inferred)
    by_op: Counter[str] = Counter()
    unknown = 0
    for node in inferred.graph.node:  # subgraph bodies have no inferred shapes here; they are not counted
        if node.domain not in ("", "ai.onnx") or node.op_type not in _MAC_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown += 1
        else:
            by_op[node.op_type] += macs
    per_sample = {op: v // batch for op, v in by_op.items()}
    total = sum(per_sample.values()) if per_sample else None
    return total, per_sample, unknown, note


def describe(model: ModelProto) -> ModelInfo:
    histogram: Counter[str] = Counter()
    for node in _all_nodes(model.graph):
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        histogram[key] += 1
    initializer_names = {t.name for t in model.graph.initializer}
    params = sum(_numel(list(t.dims)) for t in model.graph.initializer)
    params += sum(_numel(list(st.values.dims)) for st in model.graph.sparse_initializer)
    init_bytes = sum(_tensor_bytes(t) for t in model.graph.initializer)
    init_bytes += sum(_tensor_bytes(st.values) for st in model.graph.sparse_initializer)
    macs, by_op, unknown, note = _count_macs(model)
    return ModelInfo(
        ir_version=model.ir_version,
        opset_imports=[OpsetImport(domain=o.domain or "ai.onnx", version=o.version) for o in model.opset_import],
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        graph_name=model.graph.name,
        inputs=[_spec(i) for i in model.graph.input if i.name not in initializer_names],
        outputs=[_spec(o) for o in model.graph.output],
        op_histogram=dict(sorted(histogram.items())),
        node_count=sum(histogram.values()),
        parameter_count=params,
        initializer_bytes=init_bytes,
        macs_per_sample=macs,
        macs_by_op_type=by_op,
        macs_unknown_nodes=unknown,
        macs_batch_note=note,
    )


def check_and_inspect(path: str) -> ModelInfo:
    """Entry point for the upload check: load, refuse external data, describe, checker, ORT session.

    The parsed model is dropped before the checker and ONNX Runtime load the file again, so peak memory
    is about twice the file size, not three times (BENCHMARKS.md).
    """
    p = Path(path)
    model = load_untrusted(p)
    refuse_external_data(model)
    info = describe(model)
    del model
    gc.collect()
    check_model(p)
    check_runtime(p, threads=int(os.environ.get("ONNXSMITH_SANDBOX_THREADS", "1")))
    return info
