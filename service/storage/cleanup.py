"""Removing stored objects that nothing references (`onnxsmith cleanup`).

Safe beside concurrent uploads: an object is removed only when it is older than the grace period, and under the
same blob-row lock an upload takes (service/storage/repository.lock_or_create): the cleanup inserts or locks the
row, re-counts references, deletes the object and the row, and commits. An upload of the same bytes waits on that
lock, then finds the object missing and puts it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from service.storage import repository as repo
from service.storage.base import ObjectStore

log = logging.getLogger("onnxsmith.storage")


@dataclass
class CleanupReport:
    objects_seen: int = 0
    removed: list[str] = field(default_factory=list)
    kept_recent: int = 0
    dry_run: bool = False


def cleanup(*, sessions: sessionmaker[Session], store: ObjectStore, grace_s: float, dry_run: bool) -> CleanupReport:
    report = CleanupReport(dry_run=dry_run)
    cutoff = time.time() - grace_s
    candidates = []
    for key, modified in store.iter_keys():
        report.objects_seen += 1
        if modified > cutoff:
            report.kept_recent += 1
            continue
        candidates.append(key)
    for key in candidates:
        if dry_run:
            with sessions() as db:
                if repo.count_references(db, key) == 0:
                    report.removed.append(key)
            continue
        with sessions() as db, db.begin():
            repo.lock_or_create(db, key=key, sha256=key.rsplit("/", 1)[1], size=0)
            if repo.count_references(db, key) > 0:
                continue  # referenced: the object stays (and so does its row)
            store.delete(key)
            blob = repo.lock(db, key)
            if blob is not None:
                repo.delete(db, blob)
        report.removed.append(key)
        log.info("cleanup removed unreferenced blob %s", key)
    return report
