"""Migrations are the schema: autogenerate finds nothing to add, and the app refuses an old database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient

from service import migrations
from service.app import DatabaseNotAtHead, create_app
from service.db import make_engine
from service.settings import Settings
from service.tables import Base


@pytest.mark.sqlite
def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_api_refuses_to_start_on_a_database_not_at_head(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_engine(url).connect().close()  # an empty database: no migrations at all
    app = create_app(Settings(data_dir=tmp_path, database_url=url))
    with pytest.raises(DatabaseNotAtHead, match="onnxsmith db upgrade"), TestClient(app):
        pass
    migrations.upgrade(url)
    with TestClient(create_app(Settings(data_dir=tmp_path, database_url=url))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_migration_0005_keeps_datasets_uploaded_twice_before_it(tmp_path) -> None:
    """Duplicates made before the unique key existed: the earliest keeps the key, the others stay (NULL key)."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrations.upgrade(url, "0004")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES ('ten_1', 't', '2026-01-01')"))
        conn.execute(
            sa.text("INSERT INTO blobs (key, sha256, size_bytes, created_at) VALUES ('k', 's', 1, '2026-01-01')")
        )
        for i in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO datasets (id, tenant_id, name, kind, format, label, sha256, size_bytes, blob_key, "
                    "summary, created_at) VALUES (:id, 'ten_1', 'd', 'samples', 'npz', 'y', 's', 1, 'k', '{}', "
                    "'2026-01-01')"
                ),
                {"id": f"ds_{i}"},
            )
    migrations.upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, dedup_key FROM datasets ORDER BY id")).all()
    assert rows == [("ds_1", "s:samples:y"), ("ds_2", None)]
    engine.dispose()
