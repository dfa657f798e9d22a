"""Tenants and API keys: keys are random, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.db import new_id, utcnow
from service.tenants import repository as repo
from service.tenants.tables import ApiKey, Tenant

KEY_PREFIX = "osk_"
_TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class NewKey:
    key: str  # the only time the plain key exists
    key_id: str
    tenant: Tenant


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(*, db: Session, name: str) -> Tenant:
    if not _TENANT_NAME.fullmatch(name):
        raise ValueError("tenant names are 1-100 characters of a-z, 0-9, '_', '.', '-' (starting alnum)")
    tenant = repo.get_tenant_by_name(db, name)
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), name=name)
        repo.add(db, tenant)
    return tenant


def create_key(*, db: Session, tenant_name: str, key_name: str | None = None) -> NewKey:
    tenant = get_or_create_tenant(db=db, name=tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), tenant_id=tenant.id, name=key_name, prefix=key[:12], key_hash=hash_key(key))
    repo.add(db, row)
    return NewKey(key=key, key_id=row.id, tenant=tenant)


def authenticate(*, db: Session, key: str) -> Tenant | None:
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    found = repo.get_active_key(db, hash_key(key))
    return found[1] if found else None


def revoke_key(*, db: Session, key_id: str) -> bool:
    row = repo.get_key(db, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    db.flush()
    return True


def list_keys(*, db: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    return repo.list_keys(db, tenant_name)


def has_any_key(*, db: Session) -> bool:
    return repo.count_keys(db) > 0
