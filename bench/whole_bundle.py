"""What a kind that holds the whole model costs on a bundle (issue 20): a chain of square MatMuls of about
`--megabytes` of weights in one external data file, run as the worker runs a job (engine.registry:run_in_child in the
sandbox, the job memory limit of the default settings, 8 GiB of address space): `Kind.execute` first reads the
external data into one model file in scratch (engine.bundle.load_whole), then the kind runs on it. The child's peak
RSS against the bundle's size is the figure; a kind that streams the bundle (quantize weight_only) for comparison.

    .venv/bin/python bench/whole_bundle.py [--megabytes 1024] [--dir /path/with/room]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bundle_inspect import build  # noqa: E402
from engine.bundle import check_and_inspect_bundle  # noqa: E402
from engine.core.inputs import JobInputs  # noqa: E402
from engine.machine import machine_info  # noqa: E402
from engine.sandbox import Limits, run_isolated  # noqa: E402
from service.settings import Settings  # noqa: E402

JOBS = {
    "quantize dynamic (whole)": ("quantize", {"mode": "dynamic", "runs": 5, "batch_sizes": [1], "threads": [1]}),
    "prune magnitude 0.5 (whole)": ("prune", {"method": "magnitude", "ratio": 0.5, "runs": 5, "batch_sizes": [1]}),
    "quantize weight_only (streamed)": (
        "quantize", {"mode": "weight_only", "runs": 5, "batch_sizes": [1], "threads": [1]},
    ),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    m = machine_info()
    limit_mb = Settings().job_memory_mb
    print(f"machine: {m.cpu_model}, {m.logical_cpus} logical CPUs, int8 ISA {m.int8_isa}")
    print(f"job memory limit (address space): {limit_mb} MiB")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        folder = build(work / "model", args.megabytes, args.dim)
        graph = folder / "model.onnx"
        size = sum(p.stat().st_size for p in folder.iterdir())
        info = check_and_inspect_bundle(str(graph), str(folder), runtime_max_bytes=0)
        print(f"bundle: {size / 2**20:,.0f} MiB ({info.parameter_count:,} parameters)")
        print("| job | child peak RSS | x bundle | seconds | output |")
        print("|---|---|---|---|---|")
        for name, (kind, params) in JOBS.items():
            inputs = JobInputs(
                model_path=str(graph), model_info=info, datasets={}, out_dir=str(work / f"out-{kind}-{len(name)}")
            )
            started = time.perf_counter()
            try:
                result = run_isolated(
                    "engine.registry:run_in_child",
                    {"kind": kind, "inputs": inputs.model_dump(mode="json"), "params": params},
                    Limits(memory_mb=limit_mb, timeout_s=3600, threads=1),
                )
            except Exception as exc:  # a limit reached is a figure too
                print(f"| {name} | - | - | {time.perf_counter() - started:.1f} | failed: {str(exc)[:120]} |")
                continue
            out = result.value["report"].get("output_model", {})
            ratio = (out.get("size_bytes") or 0) / size
            rss = result.peak_rss_kb / 1024
            print(f"| {name} | {rss:,.0f} MiB | {rss * 2**20 / size:.2f} | {result.seconds:.1f} | {ratio:.3f}x size |")


if __name__ == "__main__":
    main()
