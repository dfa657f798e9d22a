"""/docs and /redoc load everything from the service itself (they were blank pages without internet: FastAPI's
defaults fetch Swagger UI and ReDoc from a CDN)."""

from __future__ import annotations

import re

import pytest

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.sqlite
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_need_nothing_but_this_service(client, page) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", r.text)
    assert urls, r.text
    external = [u for u in urls if re.match(r"(?i)^(https?:)?//", u)]
    assert not external, f"{page} still loads {external}"
    assets = [u for u in urls if u.startswith("/docs-assets/")]
    assert any(u.endswith(".js") for u in assets), urls
    for url in assets:
        got = client.get(url)
        assert got.status_code == 200, url
        assert ASSET_TYPES[url[url.rindex(".") :]] in got.headers["content-type"], (url, got.headers["content-type"])
        assert len(got.content) > 1000


def test_swagger_ui_does_not_call_the_public_validator(client) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_swagger_pre_fills_nothing_invalid(client) -> None:
    """Swagger UI filled optional form fields with the word `string` (a model named "string", a dataset of
    format "string") and the job body with `kind: "string"`."""
    from engine.registry import kind_names

    spec = client.get("/openapi.json").json()
    for path in ("/v1/models", "/v1/datasets"):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        for name, prop in form["properties"].items():
            if name == "file" or prop.get("items", {}).get("format") == "binary":  # file pickers: nothing typed
                continue
            assert prop.get("example") == "" or prop.get("enum"), (path, name, prop)
    dataset_form = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert dataset_form["properties"]["format"]["enum"] == ["npz", "csv", "parquet", "json"]
    assert dataset_form["properties"]["kind"]["enum"] == ["samples", "history"]
    example = spec["components"]["schemas"]["JobCreate"]["examples"][0]
    assert example["kind"] in kind_names() and set(example) == {"kind", "model_id", "datasets", "params"}


def test_the_openapi_document_says_what_the_service_answers(client) -> None:
    from engine.registry import kind_names

    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    union = schemas["JobCreate"]
    assert union["discriminator"]["propertyName"] == "kind" and set(union["discriminator"]["mapping"]) == set(
        kind_names()
    )
    quantize = schemas["QuantizeJob"]
    assert quantize["properties"]["kind"]["const"] == "quantize" and "params" in quantize["required"]  # mode
    assert schemas["QuantizeParams"]["properties"]["max_seconds"]["exclusiveMaximum"] == 3600  # the job time limit
    assert "HTTPValidationError" not in schemas and "Problem" in schemas
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (path, method, code)
            if path.startswith("/v1/"):
                assert {"401", "503"} <= set(operation["responses"]), (path, method)
                if "{" in path:
                    assert "404" in operation["responses"], (path, method)


def test_a_wrong_method_names_every_allowed_one(client) -> None:
    r = client.put("/v1/models")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers
    r = client.put("/v1/models/mdl_x")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET", r.headers
    assert r.headers["content-type"] == "application/problem+json"
