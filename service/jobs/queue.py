"""Sending job messages. The service enqueues by task name only; task bodies live in workers/."""

from __future__ import annotations

from typing import Any

from engine.registry import get_kind
from service.settings import Settings


def task_name(kind: str) -> str:
    return f"onnxsmith.jobs.{kind}"


class Enqueuer:
    """Sends job messages through a Celery app: a producer-only one in the API, the worker's own in workers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @classmethod
    def for_settings(cls, settings: Settings) -> Enqueuer:
        from service.broker import make_celery

        return cls(make_celery(settings))

    def send(self, *, kind: str, job_id: str) -> None:
        self.app.send_task(task_name(kind), args=[job_id], queue=get_kind(kind).queue)

    def ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a queue (declared if missing); reserved and running ones are not counted."""
        with self.app.connection_for_read() as conn:
            return int(conn.default_channel.queue_declare(queue=queue, passive=False).message_count)
