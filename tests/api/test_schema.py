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
