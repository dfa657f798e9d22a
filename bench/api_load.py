"""API under load: GET /v1/jobs/{id} with 64 concurrent connections (wrk) against `onnxsmith serve --workers 2`
on PostgreSQL + Redis, both on loopback, measured interleaved with a bare baseline (bench/bare_app.py: FastAPI +
SQLAlchemy, one select by primary key on the same database, the same number of uvicorn processes): round after
round, baseline then onnxsmith, so both see the same machine. Run (needs wrk from Debian's packages):

    .venv/bin/python bench/api_load.py --seconds 10 --rounds 3
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
import uuid
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.machine import load_average, machine_info  # noqa: E402
from service import migrations  # noqa: E402
from tests import onnx_models  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--uvicorn-workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=8798)
    ap.add_argument("--bare-port", type=int, default=8799)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onnxsmith-load-"))
    name = f"onnxsmith_load_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    broker = "redis://127.0.0.1:6379/14"
    redis.Redis.from_url(broker).flushdb()
    env = dict(
        os.environ,
        ONNXSMITH_DATA_DIR=str(work),
        ONNXSMITH_DATABASE_URL=url,
        ONNXSMITH_BROKER_URL=broker,
        ONNXSMITH_STORAGE_URL=(work / "store").as_uri(),
    )
    key = subprocess.run(
        [sys.executable, "-m", "onnxsmith.cli", "keys", "create", "--tenant", "load"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "onnxsmith.cli",
            "serve",
            "--port",
            str(args.port),
            "--no-worker",
            "--workers",
            str(args.uvicorn_workers),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "serve.log", "w"),  # noqa: SIM115
    )
    bare = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(args.bare_port), "--workers",
         str(args.uvicorn_workers)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "bare.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    rounds: list[dict[str, dict]] = []
    try:
        for url in (base + "/healthz", f"http://127.0.0.1:{args.bare_port}/docs"):
            for _ in range(150):
                try:
                    if httpx.get(url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        model = http.post("/v1/models", files={"file": ("m.onnx", onnx_models.mlp(work / "m.onnx").read_bytes())})
        job = http.post("/v1/jobs", json={"kind": "benchmark", "model_id": model.json()["id"]}).json()
        targets = {
            "bare": f"http://127.0.0.1:{args.bare_port}/jobs/{job['id']}",
            "onnxsmith": f"{base}/v1/jobs/{job['id']}",
        }
        assert http.get(targets["onnxsmith"]).status_code == 200
        assert httpx.get(targets["bare"]).status_code == 200
        for _ in range(args.rounds):
            rounds.append({name: wrk(url, key, args) for name, url in targets.items()})
            print(json.dumps(rounds[-1]), file=sys.stderr)
        metrics = http.get("/metrics").text
    finally:
        for proc in (server, bare):
            proc.terminate()
            proc.wait(30)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    report(rounds, args, metrics)


def wrk(url: str, key: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-H", f"Authorization: Bearer {key}",
         url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        **{f"p{p}_ms": _ms(v) for p, v in latency.items()},
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return round(float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit], 1)


def report(rounds: list[dict[str, dict]], args: argparse.Namespace, metrics: str) -> None:
    info = machine_info()
    print(
        f"machine: {info.cpu_model}, {info.logical_cpus} CPUs, ISA {' '.join(info.cpu_flags)}; "
        f"{args.uvicorn_workers} uvicorn processes each, wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"{args.rounds} interleaved rounds; load average at the end {load_average()}\n"
    )
    print(
        "| round | bare req/s | onnxsmith req/s | ratio | bare p50 / p99 ms | onnxsmith p50 / p90 / p99 ms | non-2xx |"
    )  # noqa: E501
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(rounds, 1):
        b, o = r["bare"], r["onnxsmith"]
        print(
            f"| {i} | {b['rps']:.0f} | {o['rps']:.0f} | {o['rps'] / b['rps']:.2f}x | {b['p50_ms']} / {b['p99_ms']} | "
            f"{o['p50_ms']} / {o['p90_ms']} / {o['p99_ms']} | {b['non_2xx'] + o['non_2xx']} |"
        )
    ratios = [r["onnxsmith"]["rps"] / r["bare"]["rps"] for r in rounds]
    server_errors = 'status="5' in metrics
    print(
        f"\nmedian ratio {statistics.median(ratios):.2f}x; onnxsmith p99 median "
        f"{statistics.median(r['onnxsmith']['p99_ms'] for r in rounds)} ms; any 5xx in /metrics: "
        f"{server_errors}"
    )


if __name__ == "__main__":
    main()
