"""A worker's presence row: which queues it serves and which optional capabilities (e.g. PyTorch) it has.

Written when the worker is ready, refreshed every reconcile interval, removed at a clean shutdown; the API
reads the rows to refuse a job no live worker could run (service/fleet)."""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from engine.machine import capabilities, machine_info
from service.db import utcnow
from service.fleet import repository as repo
from workers.runner import context, transaction

log = logging.getLogger("onnxsmith.presence")


def worker_name(hostname: str) -> str:
    return f"{hostname}:{os.getpid()}"


def publish(name: str, queues: list[str]) -> None:
    ctx = context()
    with transaction(ctx) as db:
        repo.upsert(db, name=name, queues=sorted(queues), capabilities=capabilities(), machine=_machine())
        # rows of workers gone for ten TTLs are history, not presence
        repo.forget_before(db, utcnow() - timedelta(seconds=10 * ctx.settings.presence_ttl_s))


def _machine() -> dict:
    """The CPU this worker measures on (what /v1/kinds lists per worker)."""
    return machine_info().model_dump(include={"cpu_model", "int8_isa", "fp16_native", "cpu_flags", "logical_cpus"})


_stop = threading.Event()
_refresher: threading.Thread | None = None


def withdraw(name: str) -> None:
    """At a clean shutdown: stop refreshing first (or the thread could write the row back), then delete it."""
    _stop.set()
    if _refresher is not None:
        _refresher.join(5)
    try:
        with transaction(context()) as db:
            repo.remove(db, name=name)
    except DBAPIError:
        log.warning("could not remove presence row %s; it expires by itself", name, exc_info=True)


def start(name: str, queues: list[str]) -> threading.Thread:
    """Publish now, then refresh in a daemon thread every reconcile interval. A failed first publish (database
    briefly down) is logged and retried by the thread: the worker runs jobs either way."""
    global _refresher
    _stop.clear()

    def refresh() -> None:
        try:
            publish(name, queues)
        except Exception:
            log.exception("publishing presence failed; trying again next interval")

    refresh()
    log.info("worker %s on %s with capabilities %s", name, queues, capabilities() or "none")

    def loop() -> None:
        while not _stop.wait(context().settings.reconcile_interval_s):
            refresh()

    _refresher = threading.Thread(target=loop, name="onnxsmith-presence", daemon=True)
    _refresher.start()
    return _refresher
