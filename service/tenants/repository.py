from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.tenants.tables import ApiKey, Tenant


def get_tenant_by_name(db: Session, name: str) -> Tenant | None:
    return db.scalar(sa.select(Tenant).where(Tenant.name == name))


def add(db: Session, row: Tenant | ApiKey) -> None:
    db.add(row)
    db.flush()


def get_active_key(db: Session, key_hash: str) -> tuple[ApiKey, Tenant] | None:
    row = db.execute(
        sa.select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row else None


def list_keys(db: Session, tenant_name: str | None) -> list[tuple[ApiKey, Tenant]]:
    q = sa.select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.id)
    if tenant_name:
        q = q.where(Tenant.name == tenant_name)
    return [(k, t) for k, t in db.execute(q)]


def get_key(db: Session, key_id: str) -> ApiKey | None:
    return db.get(ApiKey, key_id)


def count_keys(db: Session) -> int:
    return db.scalar(sa.select(sa.func.count()).select_from(ApiKey)) or 0
