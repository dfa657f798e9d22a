"""Running one delivery of a job: claim -> fetch inputs -> engine in the sandbox -> store outputs -> finish. What
the inputs and outputs are is the service's (service/jobs/execution.py); this module claims, heartbeats, runs
the engine's child and maps failures to job errors and retries.

Every state change is a conditional UPDATE keyed on the attempt number (service/jobs/repository.py), so a
message delivered twice, late, or to two workers runs the job once, and a result from an attempt that lost
its lease (or a cancelled job) is dropped instead of overwriting anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from engine.core.errors import EngineError, ErrorCode
from engine.core.kind import JobOutput
from engine.sandbox import Limits, is_alive, process_identity, run_isolated
from service.db import make_engine, make_session_factory
from service.jobs import execution
from service.jobs import repository as repo
from service.jobs.tables import FINAL
from service.settings import Settings, get_settings
from service.storage import BlobCorrupt, BlobMissing, ObjectStore, StoreError, open_store
from service.tables import Base  # noqa: F401 - every table mapped, so foreign keys resolve

log = logging.getLogger("onnxsmith.worker")
TRANSIENT = (OperationalError, StoreError)


@dataclass
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore


_context: Context | None = None
_context_pid: int | None = None
_context_lock = threading.Lock()


def context() -> Context:
    """One per worker process, shared by its pool threads (built after any fork)."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            settings = get_settings()
            engine = make_engine(settings.resolved_database_url)
            _context = Context(settings, make_session_factory(engine), open_store(settings))
            _context_pid = os.getpid()
        return _context


@contextmanager
def transaction(ctx: Context) -> Iterator[Session]:
    with ctx.sessions() as db, db.begin():
        yield db


class Heartbeat:
    """Liveness and progress of one attempt, written to the job's row by a thread of its own every `interval`
    from the claim to the end of the save: fetching inputs, running the engine and storing outputs all beat,
    and nothing the attempt does on its own thread can delay a beat (the engine runs in a child process).

    Also the sandbox's monitor: called with the child's progress messages, it records them (written within
    0.25 s) and says stop once the job was cancelled or taken over."""

    MIN_GAP_S = 0.25

    def __init__(self, ctx: Context, job_id: str, attempt: int, owner: Path | None = None) -> None:
        self.ctx, self.job_id, self.attempt = ctx, job_id, attempt
        self.owner, self._touched = owner, time.monotonic()  # the scratch folder's owner file, touched as it beats
        self.interval = min(1.0, ctx.settings.job_lease_s / 3)
        self.progress: float | None = None
        self.stage: str | None = None
        self.lost = threading.Event()  # cancelled or taken over: the attempt should stop
        self.longest_gap = 0.0  # between two successful writes; compare with the lease
        self.saving = False  # set once the outputs are being saved: the job's end is then ours
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        if self.longest_gap > self.ctx.settings.job_lease_s / 2:
            log.warning(
                "job %s: heartbeats were up to %.1f s apart, over half the %.0f s lease (ONNXSMITH_JOB_LEASE_S): "
                "raise the lease or lower the load",
                self.job_id,
                self.longest_gap,
                self.ctx.settings.job_lease_s,
            )

    def __call__(self, message: dict[str, Any] | None) -> bool:
        if message:
            self.progress, self.stage = message.get("progress"), message.get("stage")
            self._wake.set()
        return not self.lost.is_set()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            if self._beat():
                now = time.monotonic()
                self.longest_gap, last = max(self.longest_gap, now - last), now
            if self.lost.is_set():
                return
            self._wake.wait(self.interval)
            self._wake.clear()
            self._stop.wait(self.MIN_GAP_S)  # progress messages batched: at most 4 writes a second

    def _beat(self) -> bool:
        try:
            with transaction(self.ctx) as db:
                alive = repo.heartbeat(db, self.job_id, self.attempt, progress=self.progress, stage=self.stage)
        except (OperationalError, DBAPIError):
            log.warning("job %s: heartbeat failed, will try again", self.job_id, exc_info=True)
            return False
        if not alive and not self.saving:
            log.info("job %s: cancelled or taken over, stopping attempt %d", self.job_id, self.attempt)
            self.lost.set()
        if self.owner is not None and time.monotonic() - self._touched > OWNER_TOUCH_S:
            self._touched = time.monotonic()
            with contextlib.suppress(OSError):
                os.utime(self.owner)  # alive, for workers of other containers (collect_orphaned_scratch)
        return True


def execute(job_id: str, *, kind: str, task: Any) -> None:
    ctx = context()
    s = ctx.settings
    lease = timedelta(seconds=s.job_lease_s)
    try:
        with transaction(ctx) as db:
            attempt = repo.claim(db, job_id, lease=lease, max_attempts=s.job_max_attempts)
    except TRANSIENT as exc:  # the database is unreachable: keep a message for the job (a retry), never drop it
        countdown = min(60, 2 ** min(task.request.retries, 6))
        log.warning("job %s: could not claim it (%s); trying again in %d s", job_id, type(exc).__name__, countdown)
        raise task.retry(countdown=countdown, exc=exc) from exc
    if attempt is None:
        _not_claimed(ctx, job_id, lease, task)
        return
    log.info("job %s (%s): attempt %d started", job_id, kind, attempt)
    try:
        _run(ctx, job_id, attempt, kind)
    except EngineError as exc:
        if exc.code == ErrorCode.CANCELLED:
            return
        if exc.code == ErrorCode.INTERNAL:  # a bug in a kind: the traceback to the log, a plain word to the user
            log.error("job %s (%s) failed with an internal error: %s\n%s", job_id, kind, exc.detail, exc.traceback)
            _finish_failed(ctx, job_id, attempt, exc.code.value, _internal_detail(job_id))
            return
        log.info("job %s failed: %s: %s", job_id, exc.code, exc.detail)
        _finish_failed(ctx, job_id, attempt, exc.code.value, exc.detail)
    except (BlobMissing, BlobCorrupt) as exc:
        log.error("job %s: input file problem: %s", job_id, exc)
        _finish_failed(ctx, job_id, attempt, ErrorCode.INPUT_UNAVAILABLE.value, str(exc))
    except TRANSIENT as exc:
        log.warning("job %s: transient error, retrying: %s", job_id, exc)
        with transaction(ctx) as db:
            repo.requeue(db, job_id, attempt, stage="waiting to retry after a transient error")
        raise task.retry(countdown=min(60, 2**attempt), exc=exc) from exc
    except Exception:
        log.exception("job %s (%s) failed with an internal error", job_id, kind)
        _finish_failed(ctx, job_id, attempt, ErrorCode.INTERNAL.value, _internal_detail(job_id))


def _internal_detail(job_id: str) -> str:
    return f"an internal error occurred; it was logged with job id {job_id}"


def worker_lost_detail(attempts: int, max_attempts: int) -> str:
    return (
        f"the job's worker was lost {attempts} time(s) (ONNXSMITH_JOB_MAX_ATTEMPTS={max_attempts}); "
        "the model or data may crash or exhaust the worker"
    )


def _not_claimed(ctx: Context, job_id: str, lease: timedelta, task: Any) -> None:
    s = ctx.settings
    with transaction(ctx) as db:
        job = repo.get_any(db, job_id)
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return
        if job.status in FINAL:
            log.info("job %s is already %s; redelivered message is a no-op", job_id, job.status)
            return
        detail = worker_lost_detail(job.attempts, s.job_max_attempts)
        if repo.give_up(db, job_id, lease=lease, max_attempts=s.job_max_attempts, detail=detail):
            log.error("job %s failed: worker_lost after %d attempts", job_id, job.attempts)
            return
    # Running under a live lease elsewhere: look again once that lease could have expired.
    log.info("job %s is running elsewhere; checking again in %.0f s", job_id, s.job_lease_s)
    raise task.retry(countdown=s.job_lease_s)


def _finish_failed(ctx: Context, job_id: str, attempt: int, code: str, detail: str) -> None:
    with transaction(ctx) as db:
        if not repo.finish(db, job_id, attempt, status="failed", error_code=code, error_detail=detail):
            log.info("job %s: failure of attempt %d dropped (cancelled or taken over)", job_id, attempt)


class _Running:
    """The jobs this worker process is running now: its reconciler never takes them for lost (on a busy machine a
    heartbeat can be late; the job is alive here all the same)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    @contextmanager
    def holding(self, job_id: str) -> Iterator[None]:
        with self._lock:
            self._ids.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._ids.discard(job_id)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._ids


RUNNING = _Running()


def _run(ctx: Context, job_id: str, attempt: int, kind_name: str) -> None:
    with RUNNING.holding(job_id):
        _run_attempt(ctx, job_id, attempt, kind_name)


def _run_attempt(ctx: Context, job_id: str, attempt: int, kind_name: str) -> None:
    s = ctx.settings
    s.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=s.tmp_dir, prefix=f"{job_id}-") as tmp_name:
        tmp = Path(tmp_name)
        owner = tmp / OWNER_FILE  # orphaned if this worker is killed
        owner.write_text(json.dumps({"namespace": pid_namespace(), "process": process_identity()}))
        with Heartbeat(ctx, job_id, attempt, owner) as heartbeat:
            heartbeat({"progress": 0.0, "stage": "fetching inputs"})
            _run_engine_and_save(ctx, job_id, attempt, kind_name, tmp, heartbeat)


def _run_engine_and_save(
    ctx: Context, job_id: str, attempt: int, kind_name: str, tmp: Path, heartbeat: Heartbeat
) -> bool:
    """Fetch, run, save; False when the result was dropped (the attempt was cancelled or taken over)."""
    s = ctx.settings
    t0 = time.perf_counter()
    with transaction(ctx) as db:
        rows = execution.load_inputs(db, job_id)
    inputs = execution.download_inputs(ctx.store, rows, tmp, max_threads=s.job_threads)
    t_fetched = time.perf_counter()
    if heartbeat.lost.is_set():
        log.info("job %s: attempt %d stopped after fetching its inputs (cancelled or taken over)", job_id, attempt)
        return False
    threads = s.job_threads  # the most a job may use; the kind's params choose within it
    limits = Limits(memory_mb=s.job_memory_mb, timeout_s=s.job_time_limit_s, threads=threads)
    result = run_isolated(
        "engine.registry:run_in_child",
        {"kind": kind_name, "inputs": inputs.model_dump(mode="json"), "params": rows.job.params},
        limits,
        monitor=heartbeat,
        poll_s=heartbeat.interval,
        warm=True,  # forked from a preloaded forkserver: milliseconds instead of an interpreter start
    )
    t_ran = time.perf_counter()
    output = JobOutput.model_validate(result.value)
    heartbeat.saving = True
    try:
        with transaction(ctx) as db:  # all of it, or none if the job is no longer ours
            saved = execution.save_outputs(
                db, ctx.store, job=rows.job, attempt=attempt, out_dir=Path(inputs.out_dir), output=output
            )
            if not saved:
                raise _ResultDropped
    except _ResultDropped:
        log.info("job %s: result of attempt %d dropped (cancelled or taken over)", job_id, attempt)
        return False
    log.info(
        "job %s succeeded in attempt %d (fetch %.3f s, engine %.3f s, save %.3f s; engine child peak RSS %d MB)",
        job_id,
        attempt,
        t_fetched - t0,
        t_ran - t_fetched,
        time.perf_counter() - t_ran,
        result.peak_rss_kb // 1024,
    )
    return True


class _ResultDropped(Exception):
    pass


OWNER_FILE = ".owner"
UNOWNED_GRACE_S = 3600.0
FOREIGN_GRACE_S = 600.0  # a folder of another container or machine: orphaned once its heartbeat stopped this long
OWNER_TOUCH_S = 30.0


def pid_namespace() -> str:
    """Where a pid means this process: the machine (host name, boot id) and the pid namespace (a container's own).
    Workers in several containers share one data volume; a pid of another namespace says nothing here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot, namespace = "", ""
    return f"{socket.gethostname()}|{boot}|{namespace}"


def collect_orphaned_scratch(tmp_dir: Path) -> list[str]:
    """Remove job scratch folders whose worker process is gone (killed before its clean-up ran); a folder without
    an owner file is removed once it is an hour old. Returns the names removed. Safe with several workers on one
    machine, and with workers in several containers sharing the volume: a live owner's folder is never touched;
    the owner's pid is checked only in its own pid namespace, elsewhere its heartbeat (the owner file's mtime)."""
    removed, here = [], pid_namespace()
    for folder in sorted(tmp_dir.glob("job_*-*")) if tmp_dir.is_dir() else []:
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            if isinstance(owner, list):  # written before the namespace was recorded
                orphaned = not is_alive(owner)
            elif owner["namespace"] == here:
                orphaned = not is_alive(owner["process"])
            else:
                orphaned = time.time() - (folder / OWNER_FILE).stat().st_mtime > FOREIGN_GRACE_S
        except FileNotFoundError:
            orphaned = time.time() - folder.stat().st_mtime > UNOWNED_GRACE_S
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if orphaned:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.warning("removed %d scratch folder(s) of killed workers: %s", len(removed), ", ".join(removed[:10]))
    return removed
