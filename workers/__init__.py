"""Celery workers: one thin task per job kind (workers/tasks.py) around one runner (workers/runner.py)."""
