"""Job overhead: created_at -> finished_at (server timestamps) of tiny `evaluate` jobs, one after another, on
PostgreSQL + Redis + one real Celery worker, or on the embedded default. Run (PostgreSQL and Redis on 127.0.0.1):

    .venv/bin/python bench/job_overhead.py --jobs 50
    .venv/bin/python bench/job_overhead.py --jobs 50 --embedded
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service import migrations  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests import data_files, onnx_models  # noqa: E402
from tests.conftest import create_key  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--redis-db", type=int, default=13)
    ap.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker instead of PostgreSQL + Redis")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onnxsmith-overhead-"))
    name = f"onnxsmith_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONNXSMITH_")}
    env.update(ONNXSMITH_DATA_DIR=str(work))
    if args.embedded:
        url, broker = f"sqlite:///{work / 'onnxsmith.db'}", None
    else:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
        broker = f"redis://127.0.0.1:6379/{args.redis_db}"
        redis.Redis.from_url(broker).flushdb()
        env.update(ONNXSMITH_DATABASE_URL=url, ONNXSMITH_BROKER_URL=broker)
    migrations.upgrade(url)
    log = open(work / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "onnxsmith.cli", "worker", "--concurrency", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        while "ready" not in (work / "worker.log").read_text():
            time.sleep(0.2)
        settings = Settings(data_dir=work, database_url=None if args.embedded else url, broker_url=broker)
        with TestClient(create_app(settings)) as api:
            api.headers["Authorization"] = f"Bearer {create_key(settings, 'bench')}"
            model = api.post("/v1/models", files={"file": ("m.onnx", onnx_models.mlp(work / "m.onnx").read_bytes())})
            x, y = data_files.classification(n=32)
            ds = api.post(
                "/v1/datasets", files={"file": ("d.npz", data_files.npz(work / "d.npz", x=x, y=y).read_bytes())}
            )
            body = {"kind": "evaluate", "model_id": model.json()["id"], "datasets": {"eval": ds.json()["id"]}}
            overheads, stages = [], []
            for i in range(args.jobs + 1):
                job = api.post("/v1/jobs", json=body).json()
                while (j := api.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
                    time.sleep(0.005)
                assert j["status"] == "succeeded", j
                created, started, finished = (
                    datetime.fromisoformat(j[k]) for k in ("created_at", "started_at", "finished_at")
                )
                if i == 0:
                    continue  # the first job warms the worker's pool process
                overheads.append((finished - created).total_seconds() * 1000)
                stages.append(((started - created).total_seconds() * 1000, (finished - started).total_seconds() * 1000))
    finally:
        worker.terminate()
        worker.wait(20)
        if not args.embedded:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(
        json.dumps(
            {
                "backend": "SQLite + filesystem broker (embedded)" if args.embedded else "PostgreSQL + Redis",
                "jobs": len(overheads),
                "created_to_finished_ms": {
                    "median": round(statistics.median(overheads), 1),
                    "p90": round(float(np.percentile(overheads, 90)), 1),
                    "min": round(min(overheads), 1),
                    "max": round(max(overheads), 1),
                },
                "created_to_started_ms_median": round(statistics.median(s[0] for s in stages), 1),
                "started_to_finished_ms_median": round(statistics.median(s[1] for s in stages), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
