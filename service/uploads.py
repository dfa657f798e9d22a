"""Streaming multipart uploads: the file part goes straight to a temp file while it is hashed and counted.

Starlette's form parser would spool the whole body before the handler runs; this reads the request
stream itself so that a body over the limit is refused (413) as soon as the limit is crossed, and a
declared Content-Length over the limit is refused before a byte of the body is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
import time
import unicodedata
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from service.deps import commit_after
from service.errors import AppError
from service.settings import Settings
from service.upload_files import DataTar, data_name, gather

MULTIPART_OVERHEAD = 64 << 10  # boundaries, part headers and small fields on top of the file itself
MAX_FIELD_BYTES = 4096
HEAD_BYTES = 512  # what a file's own limit is decided from (a tar's magic is at offset 257)
BUSY_RETRY_AFTER_S = 5


def multipart_openapi(
    fields: dict[str, str], choices: dict[str, list[str]] | None = None, data_parts: str | None = None
) -> dict:
    """OpenAPI for a multipart body, so Swagger UI shows a file picker (the body is parsed by hand). Optional fields
    carry an empty example: Swagger UI otherwise pre-fills them with the word `string` and sends it; fields with
    `choices` are enums (a drop-down with an empty choice); `data_parts` describes repeated `data` file parts."""
    props: dict = {"file": {"type": "string", "format": "binary", "description": "The file to upload"}}
    if data_parts:
        props["data"] = {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": data_parts,
            "example": [],  # else Swagger UI starts the list with one item holding the word `string`, and sends it
        }
    for name, description in fields.items():
        if choices and name in choices:
            props[name] = {"type": "string", "description": description, "enum": choices[name]}
        else:
            props[name] = {"type": "string", "description": description, "maxLength": MAX_FIELD_BYTES, "example": ""}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}}
            },
        }
    }


UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    408: {"description": "The body stalled (upload_idle_timeout_s) or came slower than upload_min_bytes_per_s"},
    413: {"description": "Upload over the size limit"},
    429: {"description": "Too many uploads in flight for this tenant or this server (Retry-After)"},
    503: {"description": "Every check slot stayed busy past the deadline (Retry-After)"},
}


@dataclass
class Upload:
    path: Path
    sha256: str
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)
    from_parts: bool = False  # a model's .onnx file and its `data` parts, gathered into the tar at `path`

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def too_large(limit: int) -> AppError:
    return AppError(
        413,
        "upload-too-large",
        f"the upload is larger than the limit of {limit} bytes",
        title="Upload too large",
        extra={"limit_bytes": limit},
    )


def _bad(detail: str, field_name: str = "file") -> AppError:
    return AppError(
        422,
        "invalid-upload",
        detail,
        title="Invalid upload",
        errors=[{"location": "body", "field": field_name, "message": detail, "type": "invalid"}],
    )


def no_room(exc: Exception) -> AppError:
    """The server's disk cannot take the upload (engine.bundle.NoSpace): 507, nothing kept."""
    return AppError(507, "insufficient-storage", str(exc), title="Insufficient storage")


def check_filename(raw: str) -> str:
    """A client's filename is shown back, never used as a path; refuse names that try to be paths.

    Clients may percent-encode it (RFC 7578 4.2; httpx sends NUL as %00), so it is checked decoded.
    """
    raw = unquote(raw)
    if "\x00" in raw or any(unicodedata.category(c) == "Cc" for c in raw):
        raise _bad("the filename contains NUL or control characters")
    if "/" in raw or "\\" in raw or raw.strip() in (".", ".."):
        raise _bad("the filename must be a plain file name, without folders or '..'")
    if len(raw) > 255:
        raise _bad("the filename is longer than 255 characters")
    return raw


class _Receiver:
    """Collects the parts while python-multipart parses the stream."""

    def __init__(
        self,
        out,
        limit: int,
        allowed_fields: set[str],
        limit_for: Callable[[bytes], int] | None = None,
        data: DataTar | None = None,
    ) -> None:
        self.out, self.limit, self.allowed = out, limit, allowed_fields
        self.body_limit = limit  # the file part's own limit may be lower; data parts count against this one
        self.data = data  # where `data` parts go (model uploads only)
        self.limit_for = limit_for  # the file's own limit, from its first bytes (an archive may be larger)
        self._head = bytearray()
        self.hash = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self.file_seen = False
        self.finished = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None  # "file", a field name, or None
        self._field_buf = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_header_field", self._header_field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_header_value", self._header_value + d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": lambda: setattr(self, "finished", True),
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._field_buf = bytearray()

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.file_seen:
                raise _bad("only one 'file' part is accepted")
            self.file_seen = True
            raw = options.get(b"filename")
            if raw is not None:
                self.filename = check_filename(raw.decode("utf-8", "replace"))
            self._part = "file"
        elif name == "data" and self.data is not None:
            raw = options.get(b"filename")
            if not raw:  # an empty file picker (Swagger UI, HTML forms) sends a nameless empty part: skipped
                self._part = "unnamed-data"
                return
            try:
                data_file = data_name(unquote(raw.decode("utf-8", "replace")))
            except ValueError as exc:
                raise _bad(str(exc), "data") from None
            if data_file in self.data.names:
                raise _bad(f"data file {data_file!r} is sent twice", "data")
            self.data.begin(data_file)
            self._part = "data"
        elif name in self.allowed:
            self._part = name
        else:
            accepted = ", ".join(["file", *(["data"] if self.data is not None else []), *sorted(self.allowed)])
            raise _bad(f"unknown form field {name!r}; accepted: {accepted}", name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part == "file":
            self.size += len(chunk)
            if self.limit_for is not None and (len(self._head) + len(chunk) >= HEAD_BYTES):
                self.limit = self.limit_for(bytes(self._head + chunk[: HEAD_BYTES - len(self._head)]))
                self.limit_for = None
            elif self.limit_for is not None:
                self._head += chunk
            if self.size > self.limit:
                raise too_large(self.limit)
            self.hash.update(chunk)
            self.out.write(chunk)
        elif self._part == "unnamed-data":
            if chunk:
                raise _bad("a 'data' part needs a filename: the location the model names it by", "data")
        elif self._part == "data":
            assert self.data is not None
            if self.data.bytes + len(chunk) + self.size > self.body_limit:
                raise too_large(self.body_limit)
            self.data.write(chunk)
        else:
            self._field_buf += chunk
            if len(self._field_buf) > MAX_FIELD_BYTES:
                raise _bad(f"form field {self._part!r} is longer than {MAX_FIELD_BYTES} bytes", self._part or "")

    def on_part_end(self) -> None:
        if self._part == "data":
            assert self.data is not None
            self.data.end()
        elif self._part and self._part not in ("file", "unnamed-data"):
            try:
                self.fields[self._part] = self._field_buf.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(f"form field {self._part!r} is not UTF-8", self._part) from None
        self._part = None


@dataclass(frozen=True)
class Pace:
    """How slow a body may be: silent for at most `idle_s`, and (once `idle_s` has passed) at least
    `min_bytes_per_s` on average since its first byte."""

    idle_s: float
    min_bytes_per_s: int

    @classmethod
    def of(cls, settings: Settings) -> Pace:
        return cls(settings.upload_idle_timeout_s, settings.upload_min_bytes_per_s)


def _too_slow(detail: str) -> AppError:
    return AppError(408, "upload-timeout", detail, title="Upload too slow", headers={"Connection": "close"})


async def paced(chunks: AsyncIterator[bytes], pace: Pace) -> AsyncIterator[bytes]:
    """The body's chunks, cut with a 408 when the client stalls or drips."""
    start, received = time.monotonic(), 0
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout=pace.idle_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _too_slow(f"the upload sent nothing for {pace.idle_s:g} s; it was cut") from None
        received += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed > pace.idle_s and received < pace.min_bytes_per_s * elapsed:
            raise _too_slow(
                f"the upload averaged {received / elapsed:.0f} bytes/s, under the minimum of "
                f"{pace.min_bytes_per_s} bytes/s; it was cut"
            )
        yield chunk


class UploadSlots:
    """Uploads in flight in this API process, per tenant and in all: a tenant cannot hold every file
    descriptor, temp file and checking child of the process with stalled or parallel uploads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}

    def in_flight(self, key: str) -> int:
        return self._count.get(key, 0)

    @contextmanager
    def take(self, tenant_id: str, *, per_tenant: int, total: int) -> Iterator[None]:
        keys = (tenant_id, "")
        with self._lock:
            if self._count.get(tenant_id, 0) >= per_tenant:
                raise busy(f"this tenant already has {per_tenant} uploads in flight (max_uploads_per_tenant)")
            if self._count.get("", 0) >= total:
                raise busy(f"the server already has {total} uploads in flight (max_uploads)")
            for key in keys:
                self._count[key] = self._count.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._count[key] -= 1


def busy(detail: str) -> AppError:
    return AppError(
        429,
        "too-many-uploads",
        f"{detail}; retry when one has finished",
        title="Too many uploads",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
    )


SLOTS = UploadSlots()


class CheckTurns:
    """At most `size` uploads of this process checked (one sandboxed child each) and stored at once; the others
    wait on the event loop, without holding a thread of the pool the other endpoints need, up to a deadline
    (200 parallel uploads used to start 68 children and 3.8 GB RSS). One semaphore per event loop."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )

    def semaphore(self, size: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        known = self._by_loop.get(loop)
        if known is None or known[0] != size:
            known = self._by_loop[loop] = (size, asyncio.Semaphore(size))
        return known[1]

    async def wait_turn(self, size: int, wait_s: float) -> asyncio.Semaphore:
        semaphore = self.semaphore(size)
        try:
            async with asyncio.timeout(wait_s):
                await semaphore.acquire()
        except TimeoutError:
            raise AppError(
                503,
                "checks-busy",
                f"{size} uploads are being checked and this one waited {wait_s:g} s for its turn; retry later",
                title="Checks busy",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            ) from None
        return semaphore


TURNS = CheckTurns()


async def receive_upload(
    request: Request,
    *,
    limit: int,
    tmp_dir: Path,
    allowed_fields: set[str],
    pace: Pace,
    limit_for: Callable[[bytes], int] | None = None,
    data_parts: bool = False,
) -> Upload:
    """Read a multipart/form-data body with one `file` part into a temp file. The caller must
    `discard()` the upload when done with it. `limit` bounds the body; `limit_for`, given the file's first 512
    bytes, its own (lower) limit, enforced from then on as the body streams. With `data_parts`, named `data` parts
    may come with the file (a model's external data): the upload is then one tar of them all (service.upload_files).
    """
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise AppError(
            415,
            "unsupported-media-type",
            "send the file as multipart/form-data with a 'file' part",
            title="Unsupported media type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise too_large(limit)

    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    data = DataTar(path.with_suffix(".tar")) if data_parts else None
    try:
        with os.fdopen(fd, "wb") as out:
            receiver = _Receiver(out, limit, allowed_fields, limit_for, data)
            parser = MultipartParser(options[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]  # a dict of the callbacks it names
            async for chunk in paced(request.stream(), pace):
                parser.write(chunk)
            parser.finalize()
        if not receiver.finished:
            raise _bad("the multipart body ended early (incomplete upload)")
        if not receiver.file_seen:
            raise _bad("the multipart field 'file' is required")
        if data is not None and data.names:  # the upload is an archive from here on, checked as one
            try:
                tar = await run_in_threadpool(gather, data, path, receiver.filename)
            except ValueError as exc:
                raise _bad(str(exc)) from None
            return Upload(tar, "", tar.stat().st_size, receiver.filename, receiver.fields, from_parts=True)
        return Upload(path, receiver.hash.hexdigest(), receiver.size, receiver.filename, receiver.fields)
    except AppError:
        path.unlink(missing_ok=True)
        raise
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise AppError(400, "incomplete-upload", "the client disconnected before the upload finished") from None
    except Exception as exc:  # the parser's own errors: malformed multipart
        path.unlink(missing_ok=True)
        if type(exc).__module__.startswith("python_multipart"):
            raise _bad(f"malformed multipart body: {exc}") from None
        raise
    finally:
        if data is not None:  # kept only as the upload's path (gather)
            data.close()
            if not data.finished:
                data.path.unlink(missing_ok=True)


async def create_from_request(
    request: Request,
    *,
    db: Session,
    settings: Settings,
    tenant_id: str,
    limit: int,
    allowed_fields: set[str],
    create: Callable[[Upload], tuple[Any, bool]],
    schema: type[BaseModel],
    location: str,
    limit_for: Callable[[bytes], int] | None = None,
    data_parts: bool = False,
) -> JSONResponse:
    """The whole upload endpoint: take an upload slot, stream the body, run `create` (check, store, row) and
    commit in one pool thread, always drop the temp file; 201 for a new row, 200 for an existing one."""
    with SLOTS.take(tenant_id, per_tenant=settings.max_uploads_per_tenant, total=settings.max_uploads):
        upload = await receive_upload(
            request,
            limit=limit,
            tmp_dir=settings.tmp_dir,
            allowed_fields=allowed_fields,
            pace=Pace.of(settings),
            limit_for=limit_for,
            data_parts=data_parts,
        )
        try:
            row, created = await checked_create(db, settings, create, upload)
        finally:
            upload.discard()
    return created_response(row, created, schema, location)


async def checked_create(
    db: Session, settings: Settings, create: Callable[[Upload], tuple[Any, bool]], upload: Upload
) -> tuple[Any, bool]:
    """`create` (check, store, row) and the commit in one pool thread, once a check slot is free."""
    turn = await TURNS.wait_turn(settings.resolved_max_concurrent_checks, settings.sandbox_timeout_s)
    try:
        return await run_in_threadpool(lambda: commit_after(db, create(upload)))
    finally:
        turn.release()


def created_response(row: Any, created: bool, schema: type[BaseModel], location: str) -> JSONResponse:
    """201 for a new row, 200 for an existing one, with its Location."""
    body = schema.model_validate(row).model_dump(mode="json")
    code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return JSONResponse(body, status_code=code, headers={"Location": f"{location}/{row.id}"})


def clean_name(name: str | None, filename: str | None, *, default: str) -> str:
    """The display name: the `name` field if given (validated), else the file name without its extension. An empty
    field counts as not given: HTML forms (Swagger UI's among them) send unfilled inputs as empty values."""
    if name:
        name = name.strip()
        if not name or len(name) > 200 or any(unicodedata.category(c) == "Cc" for c in name):
            raise AppError(
                422,
                "validation-error",
                "name must be 1-200 characters without control characters",
                title="Invalid request",
                errors=[{"location": "body", "field": "name", "message": "invalid name", "type": "invalid"}],
            )
        return name
    if filename:
        return (filename.rsplit(".", 1)[0] if "." in filename else filename)[:200] or default
    return default
