"""The baseline for bench/api_load.py: a bare FastAPI app that reads one job row by primary key with SQLAlchemy from
the same database (sync endpoint, same pool size as onnxsmith's default), nothing else: no authentication, no
tenant check, no metrics. Started by the bench with `uvicorn bench.bare_app:app --workers N` (uvicorn's defaults, as
`onnxsmith serve` uses them: access log on); the database URL comes
from ONNXSMITH_DATABASE_URL.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException

engine = sa.create_engine(os.environ["ONNXSMITH_DATABASE_URL"], pool_size=16, max_overflow=0)
jobs = sa.table("jobs", sa.column("id"), sa.column("kind"), sa.column("status"), sa.column("created_at"))
app = FastAPI()


@app.get("/jobs/{job_id}")
def get_job(job_id: str) -> dict:
    with engine.connect() as c:
        row = c.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise HTTPException(404)
    return dict(row)
