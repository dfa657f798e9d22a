"""Entry point for `celery -A workers.celery_app worker` (what `onnxsmith worker` runs)."""

from service.settings import get_settings
from workers.app import make_celery
from workers.tasks import register

app = make_celery(get_settings())
register(app)
