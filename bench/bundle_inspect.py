"""What checking a model with external data costs (issue 20): a bundle of about `--megabytes` of weights (a chain of
square MatMuls, saved with one external data file) packed as a tar, unpacked by engine.bundle.unpack (every member
checked and hashed) and checked in the sandbox child by engine.bundle.check_and_inspect_bundle, once without an
ONNX Runtime session (the path every bundle over inspect_runtime_max_bytes takes) and once with one. The child's
peak RSS is what the issue bounds (< 1 GB for a 4 GB model).

    .venv/bin/python bench/bundle_inspect.py [--megabytes 2048] [--dir /path/with/room]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.bundle import BundleLimits, unpack  # noqa: E402
from engine.machine import machine_info  # noqa: E402
from engine.sandbox import Limits, run_isolated  # noqa: E402


def build(folder: Path, megabytes: int, d: int) -> Path:
    count = max(1, megabytes * (1 << 20) // (d * d * 4))
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((d, d), dtype=np.float32) * 0.01, f"w{i}") for i in range(count)
    ]
    nodes, x = [], "x"
    for i in range(count):
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", d])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=int, default=2048)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--dim", type=int, default=4096, help="square weights of this side (4096: 64 MiB each)")
    args = ap.parse_args()
    m = machine_info()
    print(f"machine: {m.cpu_model}, {m.logical_cpus} logical CPUs")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        folder = build(work / "model", args.megabytes, args.dim)
        archive = work / "model.tar"
        with tarfile.open(archive, "w") as t:
            for p in sorted(folder.iterdir()):
                t.add(p, arcname=p.name)
        shutil.rmtree(folder)
        size = archive.stat().st_size
        print(f"bundle: {size / 2**20:,.0f} MiB tar ({args.megabytes} MiB of weights asked, {args.dim}^2 each)")
        started = time.perf_counter()
        (work / "unpacked").mkdir()
        bundle = unpack(archive, work / "unpacked", BundleLimits())
        print(f"unpack (checked, hashed): {time.perf_counter() - started:.1f} s")
        graph = str(work / "unpacked" / bundle.graph)
        print("| ONNX Runtime session | child peak RSS | seconds | parameters |")
        print("|---|---|---|---|")
        for runtime_max in (0, 1 << 62):
            result = run_isolated(
                "engine.bundle:check_and_inspect_bundle",
                {"path": graph, "root": str(work / "unpacked"), "runtime_max_bytes": runtime_max},
                Limits(memory_mb=16384, timeout_s=1800),
            )
            info = result.value
            print(
                f"| {'yes' if info['runtime_checked'] else 'no'} | {result.peak_rss_kb / 1024:,.0f} MiB | "
                f"{result.seconds:.1f} | {info['parameter_count']:,} |"
            )


if __name__ == "__main__":
    main()
