"""Errors leave as application/problem+json (RFC 9457), with a stable `type` per kind of problem."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.core.errors import EngineError
from service.storage.base import BlobCorrupt, BlobMissing, StoreError

log = logging.getLogger("onnxsmith.api")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://onnxsmith.dev/problems/"


class AppError(Exception):
    """An expected failure of a request: becomes a problem+json response with this status and type."""

    def __init__(
        self,
        status: int,
        type_: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.type, self.detail = status, type_, detail
        self.title = title or type_.replace("-", " ").capitalize()
        self.errors, self.headers, self.extra = errors, headers, extra or {}


def problem_for(exc: EngineError, *, prefix: str = "") -> AppError:
    """An engine error as the request's problem: its code's status, type and title (engine.core.errors). A code
    that is not the user's problem (5xx) is a bug here and propagates as it is."""
    info = exc.code.info
    if not exc.code.is_user_error:
        raise exc
    return AppError(info.status, prefix + info.problem, exc.detail, title=info.title, extra={"code": exc.code.value})


def not_found(what: str, id_: str) -> AppError:
    return AppError(404, "not-found", f"{what} {id_!r} does not exist", title="Not found")


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    clash = set(extra or {}) & {"type", "title", "status", "detail", "instance", "errors"}
    if clash:  # a 409 once answered "status": "succeeded" (a job's status over the problem's)
        raise ValueError(f"problem extras may not replace the standard members {sorted(clash)}")
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append(
            {
                "location": loc[0] if loc else "",
                "field": ".".join(loc[1:]),
                "message": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


DATABASE_DOWN = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
RETRY_AFTER_S = 5
OUTAGE_GAP_S = 30.0  # this long without a database error ends an outage (its errors are logged once)


class _Outage:
    """Database errors logged once per outage (the first with its cause, then a count), not a traceback each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = 0.0
        self.count = 0

    def record(self, exc: Exception) -> None:
        now = time.monotonic()
        with self.lock:
            new = now - self.last > OUTAGE_GAP_S
            if new and self.count > 1:
                log.warning("the database outage before this one answered %d requests with 503", self.count)
            self.count = 1 if new else self.count + 1
            self.last = now
        if new:
            log.error("database unavailable, answering 503 until it is back: %s", str(exc).splitlines()[0][:300])


_outage = _Outage()


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API document lists for this request's path (routes of included routers are wrapped, so the
    document is the one complete map)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem(
            exc.status,
            exc.type,
            exc.title,
            exc.detail,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['location']} {e['field']}: {e['message']}".replace("  ", " ") for e in errors)
        return problem(
            422,
            "validation-error",
            "Invalid request",
            detail or "invalid request",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette's Allow names one route's methods; a path may have several routes
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return problem(
            exc.status_code,
            slug,
            slug.replace("-", " ").capitalize(),
            detail,
            instance=request.url.path,
            headers=headers or None,
        )

    def _unavailable(request: Request, what: str, type_: str, title: str, extra: str = "") -> JSONResponse:
        return problem(
            503,
            type_,
            title,
            f"the {what} cannot be reached: retry in {RETRY_AFTER_S} s{extra}",
            instance=request.url.path,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        _outage.record(exc)
        extra = " (a job submission with the same Idempotency-Key)"
        return _unavailable(request, "database", "database-unavailable", "Database unavailable", extra)

    for error in DATABASE_DOWN:
        app.add_exception_handler(error, _database_down)

    @app.exception_handler(StoreError)
    async def _store_down(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, BlobMissing | BlobCorrupt):  # stored bytes lost or damaged: ours to repair, a 500
            return await _unexpected(request, exc)
        log.error("object store unavailable on %s %s: %s", request.method, request.url.path, str(exc)[:300])
        return _unavailable(request, "object store", "store-unavailable", "Store unavailable")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500,
            "internal-error",
            "Internal server error",
            "the server failed to handle this request; the error was logged",
            instance=request.url.path,
        )
