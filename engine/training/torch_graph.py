"""Run an ONNX graph in PyTorch, node by node, with its float weights as trainable parameters.

Used by distillation and fine-tuning: training happens on the student's own graph, and the trained values are
written back into the same initializers, so the graph, names, opsets and dynamic axes stay exactly as they
were (no converter, no re-export). Inference semantics: BatchNormalization uses its running statistics (they are
not trained), Dropout is the identity. An op the interpreter lacks is an EngineError naming it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from engine.core.errors import EngineError, ErrorCode

WEIGHT_CONSUMERS = {"Gemm", "MatMul", "Conv", "Add", "LayerNormalization"}
FROZEN_BN_INPUTS = (3, 4)  # running mean and variance


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def trainable_names(model: onnx.ModelProto) -> set[str]:
    """Float initializers with more than one element that feed weights, biases or normalization scales."""
    floats = {
        t.name
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims or [1])) > 1
    }
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type in WEIGHT_CONSUMERS:
            names.update(i for i in node.input if i in floats)
        elif node.op_type == "BatchNormalization":
            names.update(i for i in node.input[1:3] if i in floats)
    return names


def _pads(pads: list[int] | None, rank: int) -> list[int]:
    if not pads:
        return [0] * (2 * rank)
    return list(pads)


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin, ..., x1_end, x2_end] -> torch F.pad order (last dim first)."""
    rank = len(pads) // 2
    out: list[int] = []
    for d in reversed(range(rank)):
        out += [pads[d], pads[d + rank]]
    return out


class OnnxModule:
    """Callable graph: `module(feeds) -> {output name: tensor}`. `parameters()` are the trainable weights."""

    SUPPORTED = {
        "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "BatchNormalization", "Relu", "LeakyRelu",
        "Sigmoid", "Tanh", "Gelu", "Erf", "Softmax", "LogSoftmax", "MaxPool", "AveragePool", "GlobalAveragePool",
        "Flatten", "Reshape", "Transpose", "Concat", "ReduceMean", "Identity", "Dropout", "Constant", "Clip",
        "Squeeze", "Unsqueeze", "LayerNormalization", "Pow", "Sqrt", "Neg", "Exp", "Log", "Cast",
        # the index and mask arithmetic of exported transformers (never trained through)
        "Shape", "Gather", "GatherElements", "Slice", "ConstantOfShape", "Equal", "Greater", "GreaterOrEqual",
        "Less", "LessOrEqual", "And", "Or", "Not", "Where", "Expand", "Range",
    }  # fmt: skip

    def __init__(self, model: onnx.ModelProto) -> None:
        import torch

        self.torch = torch
        self.model = model
        missing = sorted(
            {n.op_type for n in model.graph.node if n.op_type not in self.SUPPORTED or n.domain not in ("", "ai.onnx")}
        )
        if missing:
            raise EngineError(
                ErrorCode.UNSUPPORTED_OP,
                f"the training interpreter does not support these ops of the student: {missing}",
            )
        trainable = trainable_names(model)
        self.params: dict[str, Any] = {}
        self.consts: dict[str, Any] = {}
        for t in model.graph.initializer:
            array = numpy_helper.to_array(t)
            tensor = torch.from_numpy(np.array(array, copy=True))
            if t.name in trainable:
                self.params[t.name] = torch.nn.Parameter(tensor)
            else:
                self.consts[t.name] = tensor
        self.inputs = [i.name for i in model.graph.input if i.name not in self.params and i.name not in self.consts]
        self.outputs = [o.name for o in model.graph.output]

    def parameters(self) -> list[Any]:
        return list(self.params.values())

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.params.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        with self.torch.no_grad():
            for k, v in state.items():
                self.params[k].copy_(self.torch.from_numpy(v))

    def write_back(self, model: onnx.ModelProto) -> None:
        """The trained values into the model's initializers, in place; nothing else changes."""
        by_name = {t.name: t for t in model.graph.initializer}
        for name, p in self.params.items():
            by_name[name].CopyFrom(numpy_helper.from_array(p.detach().cpu().numpy().astype(np.float32), name))

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        env: dict[str, Any] = {**self.consts, **self.params, **feeds}
        for node in self.model.graph.node:
            args = [env[i] if i else None for i in node.input]
            try:
                results = self._run(node, args)
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(
                    ErrorCode.UNSUPPORTED_OP, f"node {node.name or node.output[0]!r} ({node.op_type}): {str(exc)[:300]}"
                ) from None
            for name, value in zip(node.output, results, strict=False):
                if name:
                    env[name] = value
        return {name: env[name] for name in self.outputs}

    def _run(self, node: onnx.NodeProto, x: list[Any]) -> list[Any]:
        for group in (self._compute, self._elementwise, self._shapes, self._indexing):
            out = group(node, x, _attrs(node))
            if out is not None:
                return out
        raise EngineError(ErrorCode.UNSUPPORTED_OP, f"{node.op_type} is not supported by the training interpreter")

    def _compute(self, node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> list[Any] | None:
        """Ops with weights, reductions and normalizations. None: not one of them."""
        torch, F, op = self.torch, self.torch.nn.functional, node.op_type
        if op == "Gemm":
            A, B = x[0], x[1]
            if a.get("transA", 0):
                A = A.t()
            if a.get("transB", 0):
                B = B.t()
            y = a.get("alpha", 1.0) * (A @ B)
            if len(x) > 2 and x[2] is not None:
                y = y + a.get("beta", 1.0) * x[2]
            return [y]
        if op == "MatMul":
            return [torch.matmul(x[0], x[1])]
        if op in ("Add", "Sub", "Mul", "Div", "Pow"):
            fn = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow}[op]
            return [fn(x[0], x[1])]
        if op == "Conv":
            rank = x[1].dim() - 2
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise EngineError(ErrorCode.UNSUPPORTED_OP, f"Conv {node.name!r}: auto_pad is not supported, use pads")
            pads = _pads(a.get("pads"), rank)
            inp = x[0]
            if any(pads[d] != pads[d + rank] for d in range(rank)):
                inp, pad = F.pad(inp, _torch_pad(pads)), [0] * rank
            else:
                pad = pads[:rank]
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
            return [
                conv(inp, x[1], x[2] if len(x) > 2 else None, stride=a.get("strides", [1] * rank), padding=pad,
                     dilation=a.get("dilations", [1] * rank), groups=a.get("group", 1))
            ]  # fmt: skip
        if op == "BatchNormalization":
            return [F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))]
        if op in ("MaxPool", "AveragePool"):
            k = a["kernel_shape"]
            rank = len(k)
            pads = _pads(a.get("pads"), rank)
            if any(pads[d] != pads[d + rank] for d in range(rank)):
                raise EngineError(ErrorCode.UNSUPPORTED_OP, f"{op} {node.name!r}: asymmetric pads")
            if rank != 2:
                raise EngineError(ErrorCode.UNSUPPORTED_OP, f"{op} {node.name!r}: only 2-D pooling")
            stride, pad, ceil = a.get("strides", [1] * rank), pads[:rank], bool(a.get("ceil_mode", 0))
            if op == "MaxPool":
                return [F.max_pool2d(x[0], k, stride, pad, ceil_mode=ceil)]
            return [
                F.avg_pool2d(
                    x[0], k, stride, pad, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0))
                )
            ]
        if op == "GlobalAveragePool":
            return [x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)]
        if op == "ReduceMean":
            axes = a.get("axes")
            if axes is None and len(x) > 1 and x[1] is not None:
                axes = [int(v) for v in x[1].tolist()]
            dims = tuple(axes) if axes else tuple(range(x[0].dim()))
            return [x[0].mean(dim=dims, keepdim=bool(a.get("keepdims", 1)))]
        if op == "LayerNormalization":
            axis = a.get("axis", -1) % x[0].dim()
            shape = x[0].shape[axis:]
            bias = x[2] if len(x) > 2 else None
            return [F.layer_norm(x[0], shape, x[1], bias, a.get("epsilon", 1e-5))]
        return None

    def _elementwise(self, node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> list[Any] | None:
        """Element-wise ops. None: not one of them."""
        torch, F, op = self.torch, self.torch.nn.functional, node.op_type
        if op == "Relu":
            return [F.relu(x[0])]
        if op == "LeakyRelu":
            return [F.leaky_relu(x[0], a.get("alpha", 0.01))]
        if op == "Sigmoid":
            return [torch.sigmoid(x[0])]
        if op == "Tanh":
            return [torch.tanh(x[0])]
        if op == "Gelu":
            approx = a.get("approximate", b"none")
            return [F.gelu(x[0], approximate="tanh" if approx in (b"tanh", "tanh") else "none")]
        if op == "Erf":
            return [torch.erf(x[0])]
        if op in ("Softmax", "LogSoftmax"):
            fn = F.softmax if op == "Softmax" else F.log_softmax
            return [fn(x[0], dim=a.get("axis", -1))]
        if op == "Clip":
            lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
            hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
            return [torch.clamp(x[0], min=lo, max=hi)]
        if op == "Sqrt":
            return [torch.sqrt(x[0])]
        if op == "Neg":
            return [-x[0]]
        if op == "Exp":
            return [torch.exp(x[0])]
        if op == "Log":
            return [torch.log(x[0])]
        if op == "Cast":
            dtype = _TORCH_TYPES.get(a["to"])
            if dtype is None:
                name = onnx.TensorProto.DataType.Name(a["to"])
                raise EngineError(ErrorCode.UNSUPPORTED_OP, f"Cast {node.name!r} to {name} is not supported")
            return [x[0].to(getattr(torch, dtype))]
        return None

    def _shapes(self, node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> list[Any] | None:
        """Ops that move or make data without computing on it. None: not one of them."""
        torch, op = self.torch, node.op_type
        if op == "Flatten":
            axis = a.get("axis", 1)
            return [x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)]
        if op == "Reshape":
            shape = [int(v) for v in x[1].tolist()]
            if not a.get("allowzero", 0):
                shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
            return [x[0].reshape(shape)]
        if op == "Transpose":
            perm = a.get("perm", list(reversed(range(x[0].dim()))))
            return [x[0].permute(*perm)]
        if op == "Concat":
            return [torch.cat([t for t in x if t is not None], dim=a["axis"])]
        if op in ("Identity", "Dropout"):
            return [x[0]] + ([None] if len(node.output) > 1 else [])
        if op == "Constant":
            value = numpy_helper.to_array(a["value"]) if "value" in a else np.array(a.get("value_float", 0.0))
            return [torch.from_numpy(np.array(value, copy=True))]
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(x) > 1 and x[1] is not None:
                axes = [int(v) for v in x[1].tolist()]
            t = x[0]
            if op == "Squeeze":
                dims = axes if axes is not None else [d for d, s in enumerate(t.shape) if s == 1]
                for d in sorted((d % t.dim() for d in dims), reverse=True):
                    t = t.squeeze(d)
                return [t]
            added = list(axes or [])
            rank = t.dim() + len(added)
            for d in sorted(d % rank for d in added):
                t = t.unsqueeze(d)
            return [t]
        return None

    def _indexing(self, node: onnx.NodeProto, x: list[Any], a: dict[str, Any]) -> list[Any] | None:
        """Shapes, gathers, comparisons and masks: what an exported transformer computes its attention mask and
        positions with. None: not one of them."""
        torch, op = self.torch, node.op_type
        if op == "Shape":
            dims = list(x[0].shape)[a.get("start", 0) : a.get("end")]
            return [torch.tensor(dims, dtype=torch.int64)]
        if op == "Gather":
            axis = a.get("axis", 0) % x[0].dim()
            idx = x[1].long() % x[0].shape[axis]
            out = x[0].index_select(axis, idx.reshape(-1))
            return [out.reshape(tuple(x[0].shape[:axis]) + tuple(idx.shape) + tuple(x[0].shape[axis + 1 :]))]
        if op == "GatherElements":
            axis = a.get("axis", 0) % x[0].dim()
            return [torch.gather(x[0], axis, x[1].long() % x[0].shape[axis])]
        if op == "Slice":
            starts, ends = x[1].tolist(), x[2].tolist()
            axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(len(starts)))
            steps = x[4].tolist() if len(x) > 4 and x[4] is not None else [1] * len(starts)
            index = [slice(None)] * x[0].dim()
            for s0, e0, ax, st in zip(starts, ends, axes, steps, strict=True):
                if st != 1:
                    raise EngineError(ErrorCode.UNSUPPORTED_OP, f"Slice {node.name!r} with step {st}")
                size = x[0].shape[ax]
                index[ax] = slice(max(-size, min(size, s0)), max(-size - 1, min(size, e0)))
            return [x[0][tuple(index)]]
        if op == "ConstantOfShape":
            value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            fill = torch.from_numpy(np.array(value, copy=True)).reshape(())
            return [torch.full([int(v) for v in x[0].tolist()], fill.item(), dtype=fill.dtype)]
        compare = {"Equal": torch.eq, "Greater": torch.gt, "GreaterOrEqual": torch.ge, "Less": torch.lt,
                   "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or}  # fmt: skip
        if op in compare:
            return [compare[op](x[0], x[1])]
        if op == "Not":
            return [torch.logical_not(x[0])]
        if op == "Where":
            return [torch.where(x[0], x[1], x[2])]
        if op == "Expand":
            shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(int(v) for v in x[1].tolist()))
            return [x[0].expand(shape)]
        if op == "Range":
            return [torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype)]
        return None


_TORCH_TYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
}  # fmt: skip


def max_disagreement(model_path: str, module: OnnxModule, feeds: dict[str, np.ndarray]) -> float:
    """Largest abs difference between ONNX Runtime on the file and the interpreter, relative to max(1, |y|)."""
    import torch

    from engine.runtime import make_session

    session = make_session(model_path, 1)
    ort_out = session.run(module.outputs, feeds)
    with torch.no_grad():
        ours = module({k: torch.from_numpy(v) for k, v in feeds.items()})
    worst = 0.0
    for name, ref in zip(module.outputs, ort_out, strict=True):
        got = ours[name].numpy()
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        worst = max(worst, float(np.abs(got - ref).max()) / scale if ref.size else 0.0)
    return worst if math.isfinite(worst) else float("inf")
