"""The OpenAPI document says what the service answers: every error as application/problem+json (RFC 9457) with one
`Problem` schema, and on every operation the answers any request there can get (401 without a valid key, 404 for an
unknown id, 422 for an invalid request, 503 while the database or object store is unreachable ...), not only the
ones FastAPI infers. Checked by schemathesis with all its checks (tests/e2e/test_openapi_contract.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from engine.registry import get_kind, kind_names
from service.errors import PROBLEM
from service.settings import Settings

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `type` ends with the problem's short name (e.g. /unauthorized); "
    "`errors` lists field errors of a 422; some problems add fields (e.g. `code`, `job_id`).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

# What any operation of a kind can answer besides its own documented answers.
_COMMON = {
    "401": "Missing, invalid or revoked API key (send 'Authorization: Bearer <key>')",
    "503": "The database or the object store cannot be reached (Retry-After)",
}
_WITH_ID = {"404": "No such resource for this tenant (another tenant's id is a 404 too)"}
_WITH_INPUT = {"422": "The request is invalid: the problem names each field (errors)"}
_WITH_JSON_BODY = {"400": "The body is not valid JSON"}
_WITH_UPLOAD = {"415": "The body is not multipart/form-data with a 'file' part"}


# OpenAPI links: what a created resource's id opens (clients and stateful testers follow them).
_LINKS = {
    ("/v1/models", "post"): ("model_id", ["/v1/models/{model_id}", "/v1/models/{model_id}/content"]),
    ("/v1/datasets", "post"): ("dataset_id", ["/v1/datasets/{dataset_id}", "/v1/datasets/{dataset_id}/content"]),
    ("/v1/jobs", "post"): (
        "job_id",
        ["/v1/jobs/{job_id}", "/v1/jobs/{job_id}/report", "/v1/jobs/{job_id}/artifacts", "/v1/jobs/{job_id}/cancel"],
    ),
}


def _links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (path, method), (parameter, targets) in _LINKS.items():
        responses = paths.get(path, {}).get(method, {}).get("responses", {})
        links = {}
        for target in targets:
            for target_method, operation in paths.get(target, {}).items():
                if "operationId" in operation:
                    links[operation["operationId"]] = {
                        "operationId": operation["operationId"],
                        "parameters": {parameter: "$response.body#/id"},
                        "description": f"{target_method.upper()} {target} of what was created",
                    }
        for code in ("200", "201", "202"):
            if code in responses and links:
                responses[code]["links"] = links


def _deployment_limits(params: dict[str, Any], settings: Settings | None) -> None:
    """What this deployment refuses, in the params' schema: `max_seconds` below the job time limit (a default above
    it is shrunk by the server, so the default shown is the shrunk one), `threads` up to the workers' allowance."""
    if settings is None:
        return
    for name, prop in params.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        for option in options:
            if name == "max_seconds" and option.get("type") in ("number", "integer"):
                option["exclusiveMaximum"] = settings.job_time_limit_s
                if isinstance(prop.get("default"), int | float) and prop["default"] >= settings.job_time_limit_s:
                    prop["default"] = 0.8 * settings.job_time_limit_s
            elif name == "threads" and option.get("type") == "integer":
                option["maximum"] = min(option.get("maximum", settings.job_threads), settings.job_threads)
            elif name == "threads" and option.get("type") == "array":
                items = option.setdefault("items", {})
                items["maximum"] = min(items.get("maximum", settings.job_threads), settings.job_threads)


def _job_kinds(components: dict[str, Any], settings: Settings | None) -> None:
    """JobCreate as a union discriminated by `kind`: each kind's variant with its own params schema, so generated
    clients and Swagger UI show the right params per kind (the server validates the same models)."""
    base = components.get("JobCreate")
    if base is None:
        return
    variants: dict[str, str] = {}
    for name in kind_names():
        params = get_kind(name).Params.model_json_schema(ref_template="#/components/schemas/{model}")
        _deployment_limits(params, settings)
        for def_name, definition in params.pop("$defs", {}).items():
            if components.setdefault(def_name, definition) != definition:
                raise RuntimeError(f"two job kinds define different schemas named {def_name!r}")
        title = "".join(part.capitalize() for part in name.split("_"))
        components[f"{title}Params"] = params
        components[f"{title}Job"] = {
            "title": f"{title}Job",
            "type": "object",
            "description": f"A `{name}` job (GET /v1/kinds says what it reads and does).",
            "required": ["kind", "model_id", *(["params"] if params.get("required") else [])],
            "properties": {
                "kind": {"type": "string", "const": name},
                "model_id": base["properties"]["model_id"],
                "datasets": base["properties"]["datasets"],
                "params": {"$ref": f"#/components/schemas/{title}Params"},
            },
            "additionalProperties": False,
        }
        variants[name] = f"#/components/schemas/{title}Job"
    components["JobCreate"] = {
        "title": "JobCreate",
        "description": "A job to run: `kind` selects the variant and its params.",
        "oneOf": [{"$ref": ref} for ref in variants.values()],
        "discriminator": {"propertyName": "kind", "mapping": variants},
        **({"examples": base["examples"]} if "examples" in base else {}),
    }


def _add(responses: dict[str, Any], answers: dict[str, str]) -> None:
    for code, description in answers.items():
        responses.setdefault(code, {"description": description})


def _document(schema: dict[str, Any], settings: Settings | None) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's shape: never what this service answers
        components.pop(name, None)
    _job_kinds(components, settings)
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/"):
                _add(responses, _COMMON)
                if "{" in path:
                    _add(responses, _WITH_ID)
                if operation.get("parameters") or operation.get("requestBody") or "{" in path:
                    _add(responses, _WITH_INPUT)
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    _add(responses, _WITH_JSON_BODY)
                if "multipart/form-data" in content:
                    _add(responses, _WITH_UPLOAD)
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = problem
    _links(schema)
    return schema


def install(app: FastAPI) -> None:
    """Replace the app's OpenAPI generator with one that documents the common answers (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                ),
                getattr(app.state, "settings", None),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
