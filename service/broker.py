"""The broker's configuration: a Celery app made from Settings. The API makes a producer-only one to send job
messages; the workers make theirs with the same settings (workers/celery_app.py) and add the tasks. The queue
names are the kinds' (engine.core.kind.QUEUES)."""

from __future__ import annotations

from celery import Celery

from engine.core.kind import QUEUES
from service.settings import Settings

__all__ = ["QUEUES", "make_celery"]


def make_celery(settings: Settings) -> Celery:
    app = Celery("onnxsmith", broker=settings.resolved_broker_url, set_as_current=False)
    visibility = settings.resolved_visibility_timeout_s
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never pickle
        result_serializer="json",
        task_ignore_result=True,  # PostgreSQL holds status and reports, not a result backend
        result_backend=None,
        task_acks_late=True,  # a message is acknowledged after its task ran, so a dead worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_create_missing_queues=True,
        # the engine's child has its own wall-time limit (job_time_limit_s); this is the safety net above it,
        # and Redis' visibility timeout must be above this or a running job would be delivered twice.
        task_time_limit=int(settings.job_time_limit_s + settings.job_lease_s + 30),
        broker_transport_options=_transport_options(settings, visibility),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def _transport_options(settings: Settings, visibility: int) -> dict:
    url = settings.resolved_broker_url
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        return {
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
        }
    if url.startswith("filesystem://"):
        folder = settings.broker_folder
        folder.mkdir(parents=True, exist_ok=True)
        # one folder in and out: API and worker processes on this machine share it
        return {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),  # exchange tables: not in the current folder
            "polling_interval": 0.1,
        }
    return {}  # e.g. sqla+: that transport hands its options to create_engine
