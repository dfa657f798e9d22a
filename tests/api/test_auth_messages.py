"""Refusals of authentication that say what to do: no key in the SDK, a header without its scheme."""

from __future__ import annotations

import pytest

from onnxsmith import BadApiKey, Client, NoApiKey

PROBLEM = "application/problem+json"


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "missing API key"),
        ("osk_abc", "no scheme: send 'Authorization: Bearer <key>'"),
        ("Basic dXNlcjpwYXNz", "scheme 'Basic' is not accepted: send 'Authorization: Bearer <key>'"),
        ("Bearer ", "missing API key"),
    ],
)
def test_a_header_without_bearer_says_what_is_wrong(client, header, says) -> None:
    r = client.get("/v1/models", headers={"Authorization": header} if header is not None else {})
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert says in r.json()["detail"], r.json()


def test_the_sdk_without_a_key_says_how_to_set_one(client, monkeypatch) -> None:
    monkeypatch.delenv("ONNXSMITH_API_KEY", raising=False)
    with Client(str(client.base_url), transport=client._transport) as sdk, pytest.raises(NoApiKey) as err:
        sdk.list_models()
    assert "ONNXSMITH_API_KEY" in str(err.value) and "onnxsmith keys create" in str(err.value)
    assert err.value.status == 401


@pytest.mark.parametrize("key", ["osk_a\nb", "osk_a b", "osk_é"])
def test_a_key_no_header_can_carry_is_refused_before_sending(key) -> None:
    with pytest.raises(BadApiKey, match="cannot carry"):
        Client("http://onnxsmith.test", key)


def test_the_sdk_with_a_key_still_sends_it(client, key) -> None:
    with Client(str(client.base_url), f"  {key} ", transport=client._transport) as sdk:
        assert sdk.list_models() == []


def _cli(monkeypatch, args: list[str], **env: str):
    from typer.testing import CliRunner

    from onnxsmith.cli import app as cli
    from service.settings import get_settings

    for name in ("ONNXSMITH_DATABASE_URL", "ONNXSMITH_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, args)
    finally:
        get_settings.cache_clear()


def test_keys_commands_in_a_folder_without_the_database_say_where_they_looked(tmp_path, monkeypatch) -> None:
    """`onnxsmith keys list` from another folder printed a 486-line traceback (unable to open database file)."""
    monkeypatch.chdir(tmp_path)
    for args in (["keys", "list"], ["keys", "create", "--tenant", "acme"], ["keys", "revoke", "key_x"]):
        r = _cli(monkeypatch, args)
        assert r.exit_code == 2, r.output
        assert f"no onnxsmith database in {tmp_path / 'onnxsmith-data'}" in r.output.replace("\n", " ")
        assert "ONNXSMITH_DATA_DIR" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "onnxsmith-data").exists()  # nothing created in the wrong folder


def test_keys_commands_on_an_unreachable_or_old_database_say_so_in_one_line(tmp_path, monkeypatch) -> None:
    r = _cli(monkeypatch, ["keys", "list"], ONNXSMITH_DATABASE_URL="postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert r.exit_code == 2 and "cannot open the database" in r.output and "secret" not in r.output, r.output
    empty = tmp_path / "empty.db"
    empty.touch()
    r = _cli(monkeypatch, ["keys", "list"], ONNXSMITH_DATABASE_URL=f"sqlite:///{empty}")
    assert r.exit_code == 2 and "onnxsmith db upgrade" in r.output, r.output
