"""What the running workers can do: the API refuses a job that no live worker on its queue could run."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from service.db import utcnow
from service.errors import AppError
from service.fleet import repository as repo

# How each capability is gained, for the problem's detail.
INSTALL_HINTS = {
    "torch": "PyTorch, the `train` extra: pip install torch==2.13.0 && pip install 'onnxsmith[train]'",
}


def capable(*, db: Session, queue: str, needs: set[str], ttl_s: float) -> tuple[str, list[str], int]:
    """Can the live workers on `queue` run a job needing `needs`: "all" of them, "some" (Celery hands a job to any
    of them, so it may land on one that cannot), "none", or "unknown" (no live worker on the queue).
    Returns (that, what every live worker lacks, how many are live)."""
    live = [w for w in repo.seen_since(db, utcnow() - timedelta(seconds=ttl_s)) if queue in w.queues]
    if not live:
        return "unknown", [], 0
    able = [w for w in live if needs <= set(w.capabilities)]
    if len(able) == len(live):
        return "all", [], len(live)
    if able:
        return "some", [], len(live)
    return "none", sorted(needs - set[str].intersection(*(set(w.capabilities) for w in live))), len(live)


def live_workers(*, db: Session, queue: str, ttl_s: float) -> list[dict]:
    """The live workers on `queue`: name, capabilities and the CPU they measure on."""
    live = [w for w in repo.seen_since(db, utcnow() - timedelta(seconds=ttl_s)) if queue in w.queues]
    return [{"name": w.name, "capabilities": list(w.capabilities), **(w.machine or {})} for w in live]


def check_capable(*, db: Session, kind: str, queue: str, needs: set[str], ttl_s: float) -> None:
    """422 missing-dependency when live workers serve `queue` and none of them has every capability in `needs`.

    With no live worker on the queue the service cannot tell (workers may be starting): the job is accepted
    and, if the worker that takes it lacks the dependency, fails with the `missing_dependency` code."""
    if not needs:
        return
    able, missing, live = capable(db=db, queue=queue, needs=needs, ttl_s=ttl_s)
    if able != "none":
        return
    hints = "; ".join(INSTALL_HINTS.get(m, m) for m in missing)
    raise AppError(
        422,
        "missing-dependency",
        f"no running worker on queue {queue!r} can run a {kind!r} job: {live} live worker(s), none with "
        f"{', '.join(missing)}. Install on the workers: {hints}",
        title="Missing dependency",
        extra={"code": "missing_dependency", "missing": missing, "live_workers": live},
    )
