"""Entry point for `celery -A workers.celery_app worker` (what `onnxsmith worker` runs)."""

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from service.broker import make_celery
from service.settings import get_settings
from workers import presence, reconciler
from workers.runner import collect_orphaned_scratch
from workers.tasks import register

app = make_celery(get_settings())
register(app)
_presence: dict[str, str] = {}


def _queues(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = [q.name for q in getattr(task_consumer, "queues", [])]
    return queues or list(app.amqp.queues)


@worker_ready.connect
def _on_ready(sender: Any = None, **_: object) -> None:
    collect_orphaned_scratch(get_settings().tmp_dir)
    reconciler.start(app)
    name = presence.worker_name(getattr(sender, "hostname", None) or "worker")
    _presence["name"] = name
    presence.start(name, _queues(sender))


@worker_shutdown.connect
def _on_shutdown(**_: object) -> None:
    if "name" in _presence:
        presence.withdraw(_presence["name"])
