"""API under load: GET /v1/jobs/{id} with 64 concurrent connections (wrk) against `onnxsmith serve --workers 2`
on PostgreSQL + Redis, both on loopback. Run (needs wrk from Debian's packages):

    .venv/bin/python bench/api_load.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from service import migrations  # noqa: E402
from tests import onnx_models  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--uvicorn-workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=8798)
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
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        model = http.post("/v1/models", files={"file": ("m.onnx", onnx_models.mlp(work / "m.onnx").read_bytes())})
        job = http.post("/v1/jobs", json={"kind": "benchmark", "model_id": model.json()["id"]}).json()
        target = f"{base}/v1/jobs/{job['id']}"
        assert http.get(target).status_code == 200
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-H",
                f"Authorization: Bearer {key}",
                target,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        metrics = http.get("/metrics").text
    finally:
        server.terminate()
        server.wait(30)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(out)
    print(
        json.dumps(
            {
                "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                "latency": latency,
                "non_2xx": int(non2xx.group(1)) if non2xx else 0,
                "connections": args.connections,
                "uvicorn_workers": args.uvicorn_workers,
                "seconds": args.seconds,
                "metrics_sample_5xx": 'status="5' in metrics,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
