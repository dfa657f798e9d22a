"""The reconciler: repairs what the broker alone cannot, from the job rows (the source of truth).

Every worker process runs it every `reconcile_interval_s` (with jitter); all its changes are conditional
UPDATEs, so several reconcilers at once are harmless (at worst a duplicate message, which is a no-op).
- A running job whose heartbeat is older than the lease lost its worker: it is re-queued and re-sent, or
  failed with worker_lost once it used its deliveries.
- A queued job whose message is older than `requeue_after_s` and that no worker claimed may have lost its message
  (Redis restarted without persistence, the embedded worker stopped mid-job, a worker took the message while the
  database was down): it is re-sent when its queue is empty, and once (its stage says so) when the queue is busy —
  under steady load the queue is never empty, and a duplicate message is a no-op.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta
from typing import Any

from engine.registry import get_kind
from service.jobs import repository as repo
from service.jobs.queue import Enqueuer
from workers.runner import (
    RUNNING,
    Context,
    collect_orphaned_scratch,
    context,
    transaction,
    worker_lost_detail,
)

log = logging.getLogger("onnxsmith.reconciler")


def reconcile_once(app: Any, ctx: Context | None = None, enqueuer: Any = None) -> dict[str, int]:
    ctx = ctx or context()
    enqueuer = enqueuer or Enqueuer(app)
    s = ctx.settings
    lease = timedelta(seconds=s.job_lease_s)
    counts = {"requeued": 0, "worker_lost": 0, "resent": 0}
    with transaction(ctx) as db:
        lost = [(j.id, j.kind, j.attempts) for j in repo.lost_running(db, lease=lease) if j.id not in RUNNING]
    for job_id, kind, attempt in lost:
        with transaction(ctx) as db:
            if attempt >= s.job_max_attempts:
                detail = worker_lost_detail(attempt, s.job_max_attempts)
                if repo.give_up(db, job_id, lease=lease, max_attempts=s.job_max_attempts, detail=detail):
                    counts["worker_lost"] += 1
                continue
            requeued = repo.requeue_lost(db, job_id, attempt, lease=lease)
        if requeued:
            enqueuer.send(kind=kind, job_id=job_id)
            counts["requeued"] += 1
            log.warning("job %s: worker stopped responding during attempt %d; re-queued", job_id, attempt)
    with transaction(ctx) as db:
        older = timedelta(seconds=s.requeue_after_s)
        waiting = [(j.id, j.kind, j.stage) for j in repo.waiting_since(db, older_than=older)]
    depths: dict[str, int] = {}
    for job_id, kind, stage in waiting:
        queue = get_kind(kind).queue
        if queue not in depths:
            depths[queue] = enqueuer.queue_depth(queue)
        busy = depths[queue] > 0
        if busy and stage == repo.RESENT_STAGE:
            continue  # re-sent once already while the queue was busy: that message is waiting its turn
        with transaction(ctx) as db:
            repo.mark_enqueued(db, job_id, stage=repo.RESENT_STAGE if busy else None)
        enqueuer.send(kind=kind, job_id=job_id)
        counts["resent"] += 1
        if busy:
            log.warning("job %s was queued and unclaimed for %.0f s while %s is busy; sent again once", job_id,
                        s.requeue_after_s, queue)  # fmt: skip
        else:
            log.warning("job %s was queued with no message in %s; sent again", job_id, queue)
    return counts


def start(app: Any) -> threading.Thread:
    """Run reconcile_once forever in a daemon thread of this worker process."""

    def loop() -> None:
        ctx = context()
        stop = threading.Event()
        while not stop.wait(ctx.settings.reconcile_interval_s * random.uniform(0.8, 1.2)):  # noqa: S311
            try:
                collect_orphaned_scratch(ctx.settings.tmp_dir)
                counts = reconcile_once(app, ctx)
                if any(counts.values()):
                    log.info("reconciled: %s", counts)
            except Exception:
                log.exception("reconciler pass failed; trying again next interval")

    thread = threading.Thread(target=loop, name="onnxsmith-reconciler", daemon=True)
    thread.start()
    return thread
