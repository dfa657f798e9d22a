"""Benchmark models, built here so every number in BENCHMARKS.md can be reproduced from this repository.

- digits MLP and CNN: trained with PyTorch (the `train` extra: pip install torch==2.13.0) on scikit-learn's
  bundled 8x8 digits (pip install scikit-learn), on a fixed split: a seeded permutation (seed 0) of the 1,797
  images, the first 1,257 for training, the last 540 for testing. The ONNX graphs are written with onnx.helper
  from the trained weights (no exporter involved) and checked against PyTorch's outputs.
- ResNet-18-like CNN: the ResNet-18 topology (stem, 4 stages of 2 basic blocks with residual Adds and
  BatchNormalization, 64-512 channels) on 3x64x64 inputs, random He-initialized weights.
- transformer encoder: 4 post-norm layers, d_model 256, 4 heads, feed-forward 1024, sequence 64, random weights;
  input embeddings [N, 64, 256], output the mean-pooled 10-class logits.

Random-weight models have no accuracy to measure: their reports give output fidelity instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
DIGITS_SEED = 0
DIGITS_TRAIN = 1257


def _model(nodes, inits, name: str, x_shape: list, y_shape: list, path: Path) -> Path:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(_typed(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="onnxsmith-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _typed(value) -> np.ndarray:
    a = np.asarray(value)
    return np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype)


# -- digits ---------------------------------------------------------------------------------------------------
def digits_split() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    train, test = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def train(
    net,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    *,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, list[float]]:
    """Adam on cross-entropy, batches of 32 in a seeded order; `net` is trained in place and left in eval mode.
    With `validation` (x, y): the per-epoch history of train and validation loss and accuracy (Keras names)."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {}
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
        net.eval()
        if validation is not None:
            xv, yv = torch.from_numpy(validation[0]), torch.from_numpy(validation[1])
            with torch.no_grad():
                for prefix, xs, ys in (("", xt, yt), ("val_", xv, yv)):
                    out = net(xs)
                    loss = float(torch.nn.functional.cross_entropy(out, ys))
                    history.setdefault(f"{prefix}loss", []).append(loss)
                    history.setdefault(f"{prefix}accuracy", []).append(float((out.argmax(1) == ys).float().mean()))
    net.eval()
    return history


def digits_mlp(path: Path, split: dict[str, np.ndarray]) -> Path:
    """64 -> 1024 -> 256 -> 10 with ReLU (331k parameters, 1.3 MB), 20 epochs of Adam."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    train(net, split["x_train"], split["y_train"], epochs=20)
    mlp_to_onnx(net, path, "digits_mlp")
    _check_against_torch(path, net, split["x_test"])
    return path


def mlp_to_onnx(net, path: Path, name: str = "mlp") -> Path:
    """A torch Sequential of Linear/ReLU layers as Gemm(transB)/Relu nodes, 64 inputs to 10 logits."""
    import torch

    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    inits, nodes, prev = {}, [], "x"
    for i, layer in enumerate(linears):
        inits[f"fc{i}.weight"] = layer.weight.detach().numpy()
        inits[f"fc{i}.bias"] = layer.bias.detach().numpy()
        out = "logits" if i == len(linears) - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [out], transB=1, name=f"fc{i}"))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    return _model(nodes, inits, name, ["N", 64], ["N", 10], path)


def digits_cnn(path: Path, split: dict[str, np.ndarray]) -> Path:
    """1x8x8 -> Conv 32 -> ReLU -> Conv 64 -> ReLU -> MaxPool 2 -> 1024 -> 256 -> 10 (284k parameters, 1.1 MB)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 32, 3, padding=1)
            self.c2 = torch.nn.Conv2d(32, 64, 3, padding=1)
            self.f1 = torch.nn.Linear(64 * 4 * 4, 256)
            self.f2 = torch.nn.Linear(256, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x.reshape(-1, 1, 8, 8)))))
            x = torch.nn.functional.max_pool2d(x, 2).flatten(1)
            return self.f2(torch.relu(self.f1(x)))

    torch.manual_seed(0)
    net = Net()
    train(net, split["x_train"], split["y_train"], epochs=15)
    p = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["img"], name="to_image"),
        helper.make_node("Conv", ["img", "c1.weight", "c1.bias"], ["a1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["a2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "f1.weight", "f1.bias"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["rh"], name="relu3"),
        helper.make_node("Gemm", ["rh", "f2.weight", "f2.bias"], ["logits"], transB=1, name="fc2"),
    ]
    _model(nodes, {**p, "shape": np.array([-1, 1, 8, 8], np.int64)}, "digits_cnn", ["N", 64], ["N", 10], path)
    _check_against_torch(path, net, split["x_test"])
    return path


def _check_against_torch(path: Path, net, x: np.ndarray) -> None:
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if not np.allclose(ref, out, atol=1e-4):
        raise AssertionError(f"{path.name}: ONNX and PyTorch disagree by {np.abs(ref - out).max()}")


# -- random-weight models -------------------------------------------------------------------------------------
def resnet18_like(path: Path, hw: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []

    def conv_bn(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool) -> str:
        inits[f"{name}.w"] = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        inits[f"{name}.bn.scale"] = rng.uniform(0.8, 1.2, cout)
        inits[f"{name}.bn.bias"] = rng.normal(0, 0.05, cout)
        inits[f"{name}.bn.mean"] = rng.normal(0, 0.05, cout)
        inits[f"{name}.bn.var"] = rng.uniform(0.8, 1.2, cout)
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, f"{name}.w"], [f"{name}.c"], strides=[stride] * 2, pads=[pad] * 4, name=f"{name}.conv"
            )
        )
        bn = [f"{name}.c", *(f"{name}.bn.{p}" for p in ("scale", "bias", "mean", "var"))]
        nodes.append(helper.make_node("BatchNormalization", bn, [f"{name}.b"], name=f"{name}.bn"))
        if not relu:
            return f"{name}.b"
        nodes.append(helper.make_node("Relu", [f"{name}.b"], [f"{name}.r"], name=f"{name}.relu"))
        return f"{name}.r"

    x = conv_bn("x", 3, 64, 7, 2, "stem", True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = conv_bn(x, cin, cout, 3, stride, f"{name}.1", True)
            y = conv_bn(y, cout, cout, 3, 1, f"{name}.2", False)
            short = conv_bn(x, cin, cout, 1, stride, f"{name}.down", False) if (stride != 1 or cin != cout) else x
            nodes.append(helper.make_node("Add", [y, short], [f"{name}.sum"], name=f"{name}.add"))
            nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"], name=f"{name}.relu"))
            x, cin = f"{name}.out", cout
    inits["fc.w"] = rng.standard_normal((10, 512)) * np.sqrt(1.0 / 512)
    inits["fc.b"] = np.zeros(10)
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
    ]
    return _model(nodes, inits, "resnet18_like", ["N", 3, hw, hw], ["N", 10], path)


def transformer_encoder(
    path: Path, layers: int = 4, d: int = 256, heads: int = 4, ff: int = 1024, seq: int = 64, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    dh = d // heads

    def const(name: str, value) -> str:
        inits[name] = np.asarray(value, dtype=np.float32)
        return name

    def linear(x: str, cin: int, cout: int, name: str) -> str:
        inits[f"{name}.w"] = rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin)
        inits[f"{name}.b"] = np.zeros(cout)
        nodes.append(helper.make_node("MatMul", [x, f"{name}.w"], [f"{name}.mm"], name=f"{name}.matmul"))
        nodes.append(helper.make_node("Add", [f"{name}.mm", f"{name}.b"], [f"{name}.out"], name=f"{name}.add"))
        return f"{name}.out"

    def layer_norm(x: str, name: str) -> str:
        inits[f"{name}.g"], inits[f"{name}.b"] = np.ones(d), np.zeros(d)
        nodes.append(
            helper.make_node("LayerNormalization", [x, f"{name}.g", f"{name}.b"], [f"{name}.out"], axis=-1, name=name)
        )
        return f"{name}.out"

    heads_shape, merge_shape = "heads_shape", "merge_shape"
    inits[heads_shape] = np.array([0, 0, heads, dh], np.int64)
    inits[merge_shape] = np.array([0, 0, d], np.int64)
    x = "x"
    const("scale", 1.0 / np.sqrt(dh))
    const("half", 0.5)
    const("one", 1.0)
    const("rsqrt2", 1.0 / np.sqrt(2.0))
    for i in range(layers):
        n = f"l{i}"
        q, k, v = (linear(x, d, d, f"{n}.{t}") for t in "qkv")
        split = []
        for t, src in zip("qkv", (q, k, v), strict=True):
            nodes.append(helper.make_node("Reshape", [src, heads_shape], [f"{n}.{t}.h"], name=f"{n}.{t}.reshape"))
            perm = [0, 2, 3, 1] if t == "k" else [0, 2, 1, 3]
            nodes.append(helper.make_node("Transpose", [f"{n}.{t}.h"], [f"{n}.{t}.t"], perm=perm, name=f"{n}.{t}.tr"))
            split.append(f"{n}.{t}.t")
        nodes += [
            helper.make_node("MatMul", split[:2], [f"{n}.scores"], name=f"{n}.qk"),
            helper.make_node("Mul", [f"{n}.scores", "scale"], [f"{n}.scaled"], name=f"{n}.scale"),
            helper.make_node("Softmax", [f"{n}.scaled"], [f"{n}.attn"], axis=-1, name=f"{n}.softmax"),
            helper.make_node("MatMul", [f"{n}.attn", split[2]], [f"{n}.ctx"], name=f"{n}.av"),
            helper.make_node("Transpose", [f"{n}.ctx"], [f"{n}.ctx.t"], perm=[0, 2, 1, 3], name=f"{n}.ctx.tr"),
            helper.make_node("Reshape", [f"{n}.ctx.t", merge_shape], [f"{n}.merged"], name=f"{n}.merge"),
        ]
        o = linear(f"{n}.merged", d, d, f"{n}.o")
        nodes.append(helper.make_node("Add", [x, o], [f"{n}.res1"], name=f"{n}.res1"))
        h = layer_norm(f"{n}.res1", f"{n}.ln1")
        f = linear(h, d, ff, f"{n}.ff1")
        nodes += [  # GELU, exact: 0.5 x (1 + erf(x / sqrt 2))
            helper.make_node("Mul", [f, "rsqrt2"], [f"{n}.g0"], name=f"{n}.gelu.div"),
            helper.make_node("Erf", [f"{n}.g0"], [f"{n}.g1"], name=f"{n}.gelu.erf"),
            helper.make_node("Add", [f"{n}.g1", "one"], [f"{n}.g2"], name=f"{n}.gelu.add"),
            helper.make_node("Mul", [f, f"{n}.g2"], [f"{n}.g3"], name=f"{n}.gelu.mul"),
            helper.make_node("Mul", [f"{n}.g3", "half"], [f"{n}.gelu"], name=f"{n}.gelu.half"),
        ]
        f2 = linear(f"{n}.gelu", ff, d, f"{n}.ff2")
        nodes.append(helper.make_node("Add", [h, f2], [f"{n}.res2"], name=f"{n}.res2"))
        x = layer_norm(f"{n}.res2", f"{n}.ln2")
    nodes.append(helper.make_node("ReduceMean", [x], ["pooled"], axes=[1], keepdims=0, name="pool"))
    logits = linear("pooled", d, 10, "head")
    nodes.append(helper.make_node("Identity", [logits], ["logits"], name="out"))
    return _model(nodes, inits, "transformer_encoder", ["N", seq, d], ["N", 10], path)
