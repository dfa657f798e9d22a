"""The API while its PostgreSQL is down: 503 database-unavailable with Retry-After (it was a 500 'a bug' with a
180-line traceback per request), logged once per outage, and back to normal when the database returns."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

from service import migrations
from service.app import create_app
from service.settings import Settings
from tests.conftest import create_key, free_port
from tests.faults.postgres import Cluster


@pytest.fixture
def cluster():
    with Cluster.temporary(free_port()) as c:
        yield c


def test_requests_during_a_database_outage_get_503_and_the_api_recovers(cluster, tmp_path, caplog) -> None:
    migrations.upgrade(cluster.url)
    settings = Settings(data_dir=tmp_path / "data", database_url=cluster.url, storage_url=(tmp_path / "s").as_uri())
    auth = {"Authorization": f"Bearer {create_key(settings, 'acme')}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/v1/models", headers=auth).status_code == 200
        cluster.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="onnxsmith.api"):
            answers = [client.get("/v1/models", headers=auth) for _ in range(5)]
        for r in answers:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "5" and r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("/database-unavailable") and "Traceback" not in r.text
        outage_lines = [rec for rec in caplog.records if "database unavailable" in rec.getMessage()]
        assert len(outage_lines) == 1 and not any(rec.exc_info for rec in caplog.records)  # once, no tracebacks
        cluster.start()
        cluster.wait_ready()
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            status = client.get("/v1/models", headers=auth).status_code
            time.sleep(0.2)
        assert status == 200, "the API did not recover within 60 s of the database's return"
