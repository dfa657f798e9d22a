"""Resumable uploads of large models: a session receives the file in numbered parts (any order, in parallel, each
re-sendable), then `complete` checks and stores it exactly as a one-request upload would (model_files).

A session lives in a folder of the API's temp dir: the file preallocated at its declared size, each part written at
its offset, a marker file per part once it arrived whole. A dropped connection loses at most the part in flight;
the client asks which parts arrived and sends the rest. Sessions untouched for `upload_session_ttl_s` are removed.
The folder is on the API machine: behind several API replicas, a session's requests must reach the same one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.bundle import NoSpace, require_room
from service.db import new_id
from service.errors import AppError, not_found
from service.settings import Settings
from service.uploads import Upload, busy, check_filename, no_room, too_large

CHUNK = 1 << 20


@dataclass
class Session:
    id: str
    tenant_id: str
    size: int
    part_size: int
    filename: str | None
    name: str | None
    created: float

    @property
    def parts(self) -> int:
        return max(1, -(-self.size // self.part_size))

    def part_length(self, n: int) -> int:
        return min(self.part_size, self.size - n * self.part_size)


def _root(settings: Settings) -> Path:
    return settings.tmp_dir / "sessions"


def _folder(settings: Settings, session_id: str) -> Path:
    if not session_id.startswith("upl_") or not session_id[4:].isalnum():
        raise not_found("upload", session_id)
    return _root(settings) / session_id


def create(*, settings: Settings, tenant_id: str, size: int, filename: str | None, name: str | None) -> Session:
    limit = max(settings.max_model_bytes, settings.max_bundle_bytes)
    if size > limit:
        raise too_large(limit)
    sweep(settings)
    root = _root(settings)
    root.mkdir(parents=True, exist_ok=True)
    mine = sum(1 for f in root.glob("*/session.json") if _tenant_of(f) == tenant_id)
    if mine >= settings.max_uploads_per_tenant:
        raise busy(
            f"this key already has {mine} resumable uploads open (max_uploads_per_tenant): complete or delete one"
        )
    try:
        require_room(root, size, f"a {size:,}-byte upload")
    except NoSpace as exc:
        raise no_room(exc) from None
    session = Session(
        id=new_id("upl"),
        tenant_id=tenant_id,
        size=size,
        part_size=settings.upload_part_bytes,
        filename=check_filename(filename) if filename else None,
        name=name,
        created=time.time(),
    )
    folder = root / session.id
    (folder / "parts").mkdir(parents=True)
    with open(folder / "data", "wb") as f:
        f.truncate(size)
    (folder / "session.json").write_text(json.dumps(asdict(session)))
    return session


def _tenant_of(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text()).get("tenant_id")
    except (OSError, ValueError):  # removed or being written at this moment
        return None


def get(*, settings: Settings, tenant_id: str, session_id: str) -> Session:
    path = _folder(settings, session_id) / "session.json"
    try:
        session = Session(**json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        raise not_found("upload", session_id) from None
    if session.tenant_id != tenant_id:
        raise not_found("upload", session_id)
    return session


def touched(settings: Settings, session: Session) -> float:
    """When the session was last written to (what expiry counts from)."""
    manifest = _folder(settings, session.id) / "session.json"
    return manifest.stat().st_mtime if manifest.exists() else session.created


def received(settings: Settings, session: Session) -> list[int]:
    return sorted(int(p.name) for p in (_folder(settings, session.id) / "parts").iterdir() if p.name.isdigit())


async def write_part(settings: Settings, session: Session, n: int, body: AsyncIterator[bytes]) -> None:
    """Part `n` at its offset; marked received only when exactly its length arrived."""
    if not 0 <= n < session.parts:
        raise _bad(f"part {n} does not exist: this upload has parts 0..{session.parts - 1}")
    expected = session.part_length(n)
    folder = _folder(settings, session.id)
    (folder / "parts" / str(n)).unlink(missing_ok=True)
    count = 0
    with open(folder / "data", "r+b") as f:
        f.seek(n * session.part_size)
        async for chunk in body:
            count += len(chunk)
            if count > expected:
                raise _bad(f"part {n} is longer than its {expected} bytes")
            f.write(chunk)
    if count != expected:
        raise _bad(f"part {n} has {count} bytes, expected {expected} (resend it)")
    (folder / "parts" / str(n)).touch()
    os.utime(folder / "session.json")


def assembled(settings: Settings, session: Session) -> Upload:
    """The whole file as an Upload (hashed), once every part arrived; 409 naming the missing parts otherwise."""
    missing = sorted(set(range(session.parts)) - set(received(settings, session)))
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise AppError(409, "upload-incomplete", f"parts not received yet: {shown}", title="Upload incomplete")
    path = _folder(settings, session.id) / "data"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    fields = {"name": session.name} if session.name else {}
    return Upload(path=path, sha256=digest.hexdigest(), size=session.size, filename=session.filename, fields=fields)


def remove(settings: Settings, session_id: str) -> None:
    shutil.rmtree(_folder(settings, session_id), ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: other sessions are alive
        _root(settings).rmdir()  # the last one out leaves no trace in the temp dir


def sweep(settings: Settings) -> int:
    """Remove sessions untouched for upload_session_ttl_s; returns how many."""
    root, gone = _root(settings), 0
    if not root.exists():
        return 0
    cutoff = time.time() - settings.upload_session_ttl_s
    for folder in root.iterdir():
        marker = folder / "session.json"
        if not marker.exists() or marker.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone


def _bad(detail: str) -> AppError:
    return AppError(422, "invalid-upload", detail, title="Invalid upload")
