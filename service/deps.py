"""Typed dependencies shared by every router."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, get_type_hints

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.errors import AppError
from service.settings import Settings
from service.storage import ObjectStore
from service.tenants import service as tenants
from service.tenants.service import Caller, KeyCache

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `onnxsmith keys create --tenant NAME` (starts with osk_).",
)


async def _settings(request: Request) -> Settings:  # async: no I/O, so no thread hop
    return request.app.state.settings


async def _store(request: Request) -> ObjectStore:
    return request.app.state.store


def _finish(session: Session, failed: bool) -> None:
    try:
        if failed:
            session.rollback()
        else:
            session.commit()
    finally:
        session.close()


async def _session(request: Request) -> AsyncIterator[Session]:
    """One Session per request. Creating it does no I/O: a connection is taken at the first query, in the
    handler's thread, and EdgeRoute commits there too, so no connection is held while a request waits for a
    thread (with more requests than pooled connections that wait could deadlock the pool). Only a failed
    request's rollback needs a thread hop here."""
    session = request.app.state.session_factory()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_finish, session, True)
        raise
    if session.in_transaction():  # a handler that did not go through EdgeRoute
        await run_in_threadpool(_finish, session, False)
    else:
        session.close()


def _commit_in_handler_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a sync handler taking `db` so that it commits in its own thread before returning (the edge)."""
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        kwargs["db"].commit()
        return result

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=hints.get("return", signature.return_annotation)
    )
    return wrapper


def commit_after(db: Session, value: Any) -> Any:
    """For async handlers that run their service call in the thread pool: commit in that same thread."""
    db.commit()
    return value


class EdgeRoute(APIRoute):
    """Every router uses this route class: sync handlers with a `db` session commit at their end."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint) and "db" in inspect.signature(endpoint).parameters:
            endpoint = _commit_in_handler_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _unauthorized(detail: str) -> AppError:
    return AppError(401, "unauthorized", detail, title="Unauthorized", headers={"WWW-Authenticate": "Bearer"})


def _without_bearer(header: str | None, missing_hint: str) -> str:
    """What is wrong with a request that has no Bearer credentials, from its Authorization header."""
    send = "send 'Authorization: Bearer <key>'"
    scheme, _, rest = (header or "").strip().partition(" ")
    if not scheme or (scheme.lower() == "bearer" and not rest.strip()):
        return f"missing API key: {send}{missing_hint}"
    if not rest and scheme.startswith(tenants.KEY_PREFIX):
        return f"the Authorization header has a key but no scheme: {send}"
    return f"Authorization scheme {scheme[:20]!r} is not accepted: {send}"


def authenticated(
    db: Session,
    creds: HTTPAuthorizationCredentials | None,
    cache: KeyCache,
    *,
    header: str | None = None,
    missing_hint: str = "",
) -> Caller:
    """The tenant of a Bearer API key, or a 401 (from the key cache when it is there; else the database).
    `header`, the raw Authorization header, makes the 401 say what is wrong with it."""
    if creds is None:
        raise _unauthorized(_without_bearer(header, missing_hint))
    cached = cache.get(creds.credentials)
    if cached is not None:
        return cached  # not put again: a hit must not extend the entry (a revoked key works at most ttl_s more)
    caller = tenants.authenticate(db=db, key=creds.credentials)
    if caller is None:
        raise _unauthorized("invalid or revoked API key")
    cache.put(creds.credentials, caller)
    return caller


def _tenant_from_database(
    db: Session, creds: HTTPAuthorizationCredentials | None, cache: KeyCache, header: str | None
) -> Caller:
    caller = authenticated(db, creds, cache, header=header)
    # End the read transaction now: an upload may stream for minutes and must not hold a pooled
    # connection (idle in transaction) meanwhile. Nothing is written yet, so this commits nothing.
    db.commit()
    return caller


async def _tenant(
    request: Request, db: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    """A key in the cache is answered on the event loop (no thread hop, no database); any other goes to the
    database in the thread pool."""
    cache: KeyCache = request.app.state.key_cache
    cached = cache.get(creds.credentials) if creds is not None else None
    if cached is not None:
        return cached
    header = request.headers.get("authorization")
    return await run_in_threadpool(_tenant_from_database, db, creds, cache, header)


TenantDep = Annotated[Caller, Depends(_tenant)]
OptionalCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(detail: str) -> AppError:
    return _unauthorized(detail)
