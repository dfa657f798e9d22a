from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from onnxsmith.cli import app as cli
from service.app import create_app

PROBLEM = "application/problem+json"


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "header",
    [None, "Bearer osk_not-a-real-key", "Bearer ", "Basic dXNlcjpwYXNz", "osk_without_scheme", "Bearer " + "x" * 5000],
)
def test_missing_or_invalid_key_is_401(client, header) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = client.get("/v1/models", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["type"].endswith("/unauthorized")


def test_401_comes_before_the_upload_is_read(client) -> None:
    r = client.post("/v1/models", files={"file": ("m.onnx", b"x" * 1000)})
    assert r.status_code == 401


def test_keys_cli_create_list_revoke(settings, monkeypatch) -> None:
    """A revoked key stops working once the API's key cache lets it go (api_key_cache_s; short here)."""
    settings = settings.model_copy(update={"api_key_cache_s": 0.5})
    monkeypatch.setenv("ONNXSMITH_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("ONNXSMITH_DATA_DIR", str(settings.resolved_data_dir))
    from service.settings import get_settings

    get_settings.cache_clear()
    runner, stack = CliRunner(), ExitStack()
    try:
        client = stack.enter_context(TestClient(create_app(settings), raise_server_exceptions=False))
        created = runner.invoke(cli, ["keys", "create", "--tenant", "initech", "--name", "ci"])
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("osk_")
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200

        listed = runner.invoke(cli, ["keys", "list", "--tenant", "initech"])
        assert listed.exit_code == 0 and "initech" in listed.stdout and key not in listed.stdout
        key_id = next(w for w in listed.stdout.split() if w.startswith("key_"))

        revoked = runner.invoke(cli, ["keys", "revoke", key_id])
        assert revoked.exit_code == 0, revoked.output
        deadline = time.monotonic() + 30
        while client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works past the cache's lifetime"
            time.sleep(0.1)
        assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 1

        bad = runner.invoke(cli, ["keys", "create", "--tenant", "../Bad Name"])
        assert bad.exit_code == 2
    finally:
        stack.close()
        get_settings.cache_clear()


def test_key_cache_keeps_valid_keys_for_its_lifetime_only(monkeypatch) -> None:
    from service.tenants import service as tenants

    now = [1000.0]
    monkeypatch.setattr(tenants.time, "monotonic", lambda: now[0])
    cache = tenants.KeyCache(ttl_s=5, max_entries=2)
    caller = tenants.Caller("ten_1", "acme")
    assert cache.get("osk_a") is None
    cache.put("osk_a", caller)
    assert cache.get("osk_a") == caller
    now[0] += 4.9
    assert cache.get("osk_a") == caller
    now[0] += 0.2
    assert cache.get("osk_a") is None  # expired: looked up in the database again (a revocation shows)
    cache.put("osk_a", caller)
    cache.put("osk_b", caller)
    cache.put("osk_c", caller)  # past max_entries: the oldest goes
    assert cache.get("osk_a") is None and cache.get("osk_c") == caller
    # a key answered from the cache is not put again: using it does not keep a revoked key alive
    from fastapi.security import HTTPAuthorizationCredentials

    from service.deps import authenticated

    cache.put("osk_d", caller)
    now[0] += 4.0
    assert authenticated(None, HTTPAuthorizationCredentials(scheme="Bearer", credentials="osk_d"), cache) == caller
    now[0] += 1.1
    assert cache.get("osk_d") is None
    off = tenants.KeyCache(ttl_s=0)
    off.put("osk_a", caller)
    assert off.get("osk_a") is None


def test_keys_are_stored_hashed(key, db) -> None:
    import sqlalchemy as sa

    stored = db.execute(sa.text("SELECT key_hash, prefix FROM api_keys")).all()
    assert len(stored) == 1
    assert key not in stored[0][0] and stored[0][1] == key[:12]


def test_openapi_offers_bearer_auth_and_a_file_picker(client) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `onnxsmith keys create --tenant NAME` (starts with osk_).",
    }
    body = spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"] == {"type": "string", "format": "binary", "description": "The file to upload"}
    assert spec["paths"]["/v1/models"]["post"]["security"] == [{"ApiKey": []}]
    assert client.get("/docs").status_code == 200
