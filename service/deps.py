"""Typed dependencies shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.db import session_scope
from service.errors import AppError
from service.settings import Settings
from service.storage import ObjectStore
from service.tenants import service as tenants
from service.tenants.tables import Tenant

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `onnxsmith keys create --tenant NAME` (starts with osk_).",
)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _store(request: Request) -> ObjectStore:
    return request.app.state.store


def _session(request: Request) -> Iterator[Session]:
    # scope="function" (below): commit runs when the handler returns, before the response is sent,
    # so a failed commit is a 500, never a 2xx for something that was not saved.
    yield from session_scope(request.app.state.session_factory)


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _unauthorized(detail: str) -> AppError:
    return AppError(401, "unauthorized", detail, title="Unauthorized", headers={"WWW-Authenticate": "Bearer"})


def _tenant(db: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Tenant:
    if creds is None:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    tenant = tenants.authenticate(db=db, key=creds.credentials)
    if tenant is None:
        raise _unauthorized("invalid or revoked API key")
    # End the read transaction now: an upload may stream for minutes and must not hold a pooled
    # connection (idle in transaction) meanwhile. Nothing is written yet, so this commits nothing.
    db.commit()
    return tenant


TenantDep = Annotated[Tenant, Depends(_tenant)]
OptionalCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def unauthorized(detail: str) -> AppError:
    return _unauthorized(detail)
