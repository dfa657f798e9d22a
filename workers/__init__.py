"""Celery workers (one thin task per job kind). The app and tasks arrive with the jobs issue (#3)."""
