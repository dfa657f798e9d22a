"""Recovery times after faults, measured by the fault tests themselves (tests/faults: their own PostgreSQL cluster
and Redis server, real worker processes), run several times; prints a markdown table for BENCHMARKS.md.

    .venv/bin/python bench/recovery.py --runs 3

The tests use short settings so that a fault resolves in seconds (ONNXSMITH_RECONCILE_INTERVAL_S=1,
ONNXSMITH_REQUEUE_AFTER_S=3, ONNXSMITH_JOB_LEASE_S=2, a visibility timeout of 6 s for the worker-loss tests):
with the defaults, scale the times as the README's Operations section says.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.machine import machine_info  # noqa: E402

TESTS = ["tests/faults/test_recovery.py", "tests/faults/test_worker_loss.py"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "recovery.jsonl"
        for run in range(args.runs):
            env = dict(os.environ, ONNXSMITH_RECOVERY_LOG=str(log))
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                                  env=env, capture_output=True, text=True)  # fmt: skip
            print(f"run {run + 1}: {done.stdout.strip().splitlines()[-1]}", file=sys.stderr)
            if done.returncode:
                print(done.stdout[-3000:], file=sys.stderr)
                sys.exit(1)
        for line in log.read_text().splitlines():
            row = json.loads(line)
            times[row["fault"]].append(row["seconds"])
    print(f"machine: {machine_info().cpu_model}, {os.cpu_count()} CPUs; {args.runs} runs\n")
    print("| fault | recovery, median (min-max) s | runs |\n| --- | --- | --- |")
    for fault, values in times.items():
        print(f"| {fault} | {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) | {len(values)} |")


if __name__ == "__main__":
    main()
