"""One thin task per job kind: the message carries the job id; everything else is read from the database."""

from __future__ import annotations

from celery import Celery

from engine.registry import kind_names
from service.jobs.queue import task_name
from workers import runner


def register(app: Celery) -> None:
    for kind in kind_names():
        _register_kind(app, kind)


def _register_kind(app: Celery, kind: str) -> None:
    @app.task(name=task_name(kind), bind=True, max_retries=None, ignore_result=True)
    def run_job(self, job_id: str) -> None:  # noqa: ANN001 - Celery's bound task
        runner.execute(job_id, kind=kind, task=self)
