"""Fixtures: a real PostgreSQL database (fresh per session, tables emptied after each test), SQLite for the
tests marked `sqlite`, local and S3 (moto's HTTP server) stores, and an API client with keys."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service import migrations
from service.app import create_app
from service.db import make_engine, make_session_factory, session_scope
from service.settings import Settings
from service.tables import Base
from service.tenants import service as tenants

OPERATOR_KEY = "operator-key-for-tests"
PG_ADMIN_URL = os.environ.get("ONNXSMITH_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = ["postgres", "sqlite"] if metafunc.definition.get_closest_marker("sqlite") else ["postgres"]
        metafunc.parametrize("backend", backends)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head, dropped at the end."""
    name = f"onnxsmith_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        migrations.upgrade(url)
        yield url
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    return Settings(
        data_dir=data, database_url=db_url, storage_url=(data / "store").as_uri(), operator_key=OPERATOR_KEY
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[sa.orm.Session]:
    """A session on the test database, for arranging rows and checking what the API left behind."""
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def create_key(settings: Settings, tenant: str) -> str:
    engine = make_engine(settings.resolved_database_url)
    for session in session_scope(make_session_factory(engine)):
        key = tenants.create_key(db=session, tenant_name=tenant).key
    engine.dispose()
    return key


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def key(settings: Settings) -> str:
    return create_key(settings, "acme")


@pytest.fixture
def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def other_auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key(settings, 'globex')}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3-compatible server over real HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"onnxsmith-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=name)
    return name


def s3_settings(data_dir: Path, endpoint: str, bucket: str, prefix: str, **more) -> Settings:
    """Settings on moto's S3 server (test credentials); `more` adds fields (database_url, ...)."""
    return Settings(
        data_dir=data_dir,
        storage_url=f"s3://{bucket}/{prefix}",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        **more,
    )


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def count_rows(session: sa.orm.Session, table: str) -> int:
    return session.scalar(sa.text(f"SELECT count(*) FROM {table}"))


def stored_files(settings: Settings) -> list[Path]:
    root = settings.resolved_data_dir / "store"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
