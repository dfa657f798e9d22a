"""Tenants and API keys: keys are random, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
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


@dataclass(frozen=True)
class Caller:
    """Who a request is from: the tenant of its API key (a plain value, safe to share between threads)."""

    tenant_id: str
    tenant_name: str

    @property
    def id(self) -> str:
        return self.tenant_id


def is_key_shaped(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) <= 200


def authenticate(*, db: Session, key: str) -> Caller | None:
    if not is_key_shaped(key):
        return None
    found = repo.get_active_key(db, hash_key(key))
    return Caller(found[1].id, found[1].name) if found else None


class KeyCache:
    """Keys recently found valid, for `ttl_s` seconds: a request with a known key needs no database round trip to
    authenticate. Only valid keys are kept (a new key works at once); a revoked key keeps working in a process that
    has it cached until its entry expires (at most `ttl_s`). ttl_s = 0 turns the cache off. Thread-safe."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Caller | None:
        if self.ttl_s <= 0:
            return None
        digest = hash_key(key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, key: str, caller: Caller) -> None:
        if self.ttl_s <= 0:
            return
        digest = hash_key(key)
        with self._lock:
            self._entries[digest] = (time.monotonic() + self.ttl_s, caller)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


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
