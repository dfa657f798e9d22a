"""Entry point for `celery -A workers.celery_app worker` (what `onnxsmith worker` runs)."""

from celery.signals import worker_ready

from service.settings import get_settings
from workers import reconciler
from workers.app import make_celery
from workers.tasks import register

app = make_celery(get_settings())
register(app)


@worker_ready.connect
def _start_reconciler(**_: object) -> None:
    reconciler.start(app)
