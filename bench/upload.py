"""Upload benchmark: a large ONNX model through a real `onnxsmith serve` (uvicorn) process.

Measures upload throughput (client-side wall time of POST /v1/models, check and store included), the API
process's peak-RSS growth during the upload (VmHWM from /proc, before vs after) and the checking child's peak
RSS (from the service log). Run:

    .venv/bin/python bench/upload.py --megabytes 500 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.machine import machine_info  # noqa: E402
from tests.onnx_models import big_mlp, mlp  # noqa: E402


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8799)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onnxsmith-bench-"))
    models = []
    for i in range(args.runs):
        # distinct bytes per run, so every run really uploads, checks and stores
        models.append(big_mlp(work / f"big{i}.onnx", args.megabytes, fill=1.0 + i))
    small = mlp(work / "small.onnx")
    env = dict(os.environ, ONNXSMITH_DATA_DIR=str(work / "data"))
    env.pop("ONNXSMITH_DATABASE_URL", None)
    log = open(work / "serve.log", "w+")  # noqa: SIM115 - lives as long as the server below
    server = subprocess.Popen(
        [sys.executable, "-m", "onnxsmith.cli", "serve", "--port", str(args.port)],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        text=True,
        cwd=ROOT,
    )
    try:
        key = ""
        while not key.startswith("osk_"):
            key = server.stdout.readline().strip()
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(100):
            try:
                httpx.get(base + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=900)
        with open(small, "rb") as f:  # warm-up: imports, first DB connection, first child
            assert http.post("/v1/models", files={"file": ("small.onnx", f)}).status_code == 201
        results = []
        for path in models:
            before = vm_hwm_kb(server.pid)
            started = time.perf_counter()
            with open(path, "rb") as f:
                r = http.post("/v1/models", files={"file": (path.name, f)})
            seconds = time.perf_counter() - started
            assert r.status_code == 201, r.text
            after = vm_hwm_kb(server.pid)
            results.append({"seconds": seconds, "rss_growth_mb": (after - before) / 1024, "peak_rss_mb": after / 1024})
        time.sleep(0.5)
        log.seek(0)
        text = log.read()
        child = [int(m) for m in re.findall(r"child peak RSS (\d+) MB", text)][1:]
        check_s = [float(m) for m in re.findall(r"checked model in ([\d.]+) s, child", text)][1:]
    finally:
        server.terminate()
        server.wait(10)
    size_mb = models[0].stat().st_size / 1e6
    summary = {
        "file_mb": round(size_mb, 1),
        "runs": args.runs,
        "throughput_mb_s_median": round(size_mb / statistics.median(r["seconds"] for r in results), 1),
        "upload_seconds": [round(r["seconds"], 2) for r in results],
        "check_seconds": check_s,
        "api_peak_rss_growth_mb": [round(r["rss_growth_mb"], 1) for r in results],
        "api_peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in results],
        "check_child_peak_rss_mb": child,
        "machine": f"{machine_info().cpu_model}, {os.cpu_count()} cores",
        "storage": "local folder (embedded default), SQLite",
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
