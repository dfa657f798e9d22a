"""Fault tests run on a topology of their own: a PostgreSQL cluster and a Redis server the tests start, stop and
restart (never the machine's shared ones), real worker processes, and the API in process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from service import migrations
from tests.conftest import free_port
from tests.e2e.conftest import Worker, api_client, settings_for, topology_env, worker_starter
from tests.faults.postgres import Cluster
from tests.faults.redis_server import RedisServer


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster.temporary(free_port()) as c:
        migrations.upgrade(c.url)
        yield c


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.temporary(tmp_path_factory.mktemp("redis"), free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def e2e_env(cluster: Cluster, redis_server: RedisServer, tmp_path_factory, request) -> dict[str, str]:
    return topology_env(
        data=tmp_path_factory.mktemp("faults-data"),
        database_url=cluster.url,
        broker_url=redis_server.url,
        visibility_timeout_s=getattr(request.module, "VISIBILITY_TIMEOUT_S", 120),
    )


@pytest.fixture(scope="module")
def start_worker(e2e_env: dict[str, str], tmp_path_factory) -> Iterator[Callable[..., Worker]]:
    with worker_starter(e2e_env, tmp_path_factory.mktemp("worker-logs")) as start:
        yield start


@pytest.fixture
def api(e2e_env: dict[str, str], cluster: Cluster, redis_server: RedisServer) -> Iterator[TestClient]:
    cluster.start_if_stopped()
    if redis_server.proc is None:
        redis_server.start()
    with api_client(settings_for(e2e_env)) as c:
        yield c
