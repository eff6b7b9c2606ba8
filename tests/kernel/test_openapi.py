from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from typing import Any, get_args

import httpx
import pytest
from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount, Route

from synchook.crypto import generate_master_key
from synchook.root.app import all_routes, create_app, openapi_document
from synchook.settings import Settings

METHODS = {"get", "post", "put", "patch", "delete"}
SPEC = openapi_document()


def normalise(path: str) -> str:
    # Parameter names are the server's business; clients see only the shape of the path.
    return re.sub(r"\{[^}]*\}", "{}", path)


def app_operations(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:
                yield from app_operations(route.routes, prefix + route.path)
            else:  # a mounted ASGI app (static files): one GET per path below it
                yield normalise(prefix + route.path + "/{path}"), "get"
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method.lower() != "head":  # implied by GET
                    yield normalise(prefix + route.path), method.lower()
        else:
            raise AssertionError(f"unexpected route type {type(route).__name__}: document it and teach this test")


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(normalise(path), method) for path, ops in spec["paths"].items() for method in ops if method in METHODS}


ROUTED = set(app_operations(all_routes()))
DOCUMENTED = sorted(spec_operations(SPEC))


def test_every_app_route_is_documented() -> None:
    undocumented = sorted(ROUTED - set(DOCUMENTED))
    assert not undocumented, f"routes missing from synchook/openapi.py: {undocumented}"


@pytest.mark.parametrize(("path", "method"), DOCUMENTED, ids=[f"{m.upper()} {p}" for p, m in DOCUMENTED])
def test_every_documented_operation_is_routed(path: str, method: str) -> None:
    assert (path, method) in ROUTED, f"{method.upper()} {path} is documented but the app has no such route"


def test_root_path_mount_serves_the_same_operations() -> None:
    settings = Settings(secret_key=generate_master_key(), root_path="/functions/v1/api-gateway")
    app = create_app(settings)
    prefixed = {(p, m) for p, m in app_operations(app.routes) if p.startswith("/functions/v1/api-gateway/")}
    assert {(p.removeprefix("/functions/v1/api-gateway"), m) for p, m in prefixed} == ROUTED


def resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_every_reference_resolves() -> None:
    for ref in set(refs(SPEC)):
        resolve(SPEC, ref)


def test_document_shape() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "wbk_…",
        "description": SPEC["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    operation_ids = [op["operationId"] for ops in SPEC["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


@pytest.mark.parametrize(("path", "method"), DOCUMENTED, ids=[f"{m.upper()} {p}" for p, m in DOCUMENTED])
def test_each_operation_documents_auth_errors_and_envelopes(path: str, method: str) -> None:
    op = next(o for p, ops in SPEC["paths"].items() for m, o in ops.items() if (normalise(p), m) == (path, method))
    responses = op["responses"]
    # The provider push endpoints (§7) take no key: the notification's channel secret authenticates it.
    if path.startswith("/v1/") and not path.startswith("/v1/providers/"):
        scope = op["x-required-scope"]
        assert op["security"] == [{"bearerAuth": [scope]}]
        assert f"`{scope}`" in op["description"]
        for status in ("401", "403", "429"):
            assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        success = next(s for s in responses if s.startswith("2"))
        assert "X-RateLimit-Limit" in responses[success]["headers"]
    else:
        assert op["security"] == []
    if "requestBody" in op:
        body = resolve(SPEC, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
        # A body told apart by a discriminator (connections: OAuth or CalDAV): each variant is closed.
        for variant in [resolve(SPEC, v["$ref"]) for v in body["oneOf"]] if "oneOf" in body else [body]:
            assert variant["additionalProperties"] is False
        assert "422" in responses
    for param in op.get("parameters", []):
        param = resolve(SPEC, param["$ref"]) if "$ref" in param else param
        if param["name"] == "limit":
            assert (param["schema"]["minimum"], param["schema"]["maximum"]) == (1, 100)


# Request-body schemas that must mirror the pydantic model the endpoint validates with.
BODIES = [
    ("TriggerSync", "sync_trigger.schemas", "TriggerSyncBody"),
    ("ConnectionCreate", "sync_trigger.schemas", "ConnectionCreateBody"),
    ("SubscriptionCreate", "subscriptions.schemas", "CreateSubscription"),
    ("SubscriptionUpdate", "subscriptions.schemas", "UpdateSubscription"),
    ("RotateSecret", "subscriptions.schemas", "RotateSecret"),
    ("ReplayCreate", "webhooks.admin.schemas", "BulkReplayBody"),
]


@pytest.mark.parametrize(("schema_name", "module", "model_name"), BODIES, ids=[b[0] for b in BODIES])
def test_body_schema_matches_the_model(schema_name: str, module: str, model_name: str) -> None:
    try:
        model = getattr(importlib.import_module(module), model_name)
    except (ImportError, AttributeError):
        pytest.skip(f"{module}.{model_name} has not landed yet")
    assert issubclass(model, BaseModel)
    # Declared endpoints document their body under the model's own name; hand-written entries under theirs.
    schemas = SPEC["components"]["schemas"]
    schema = schemas[schema_name] if schema_name in schemas else schemas[model_name]
    if "oneOf" in schema:  # a RootModel over a discriminated union: each variant mirrors its model
        variants = get_args(model.model_fields["root"].annotation)
        pairs = [(resolve(SPEC, ref["$ref"]), variant) for ref, variant in zip(schema["oneOf"], variants, strict=True)]
    else:
        pairs = [(schema, model)]
    for documented, variant in pairs:
        assert set(documented["properties"]) == set(variant.model_fields)
        required = {name for name, field in variant.model_fields.items() if field.is_required()}
        assert set(documented.get("required", [])) == required
        assert variant.model_config.get("extra") == "forbid"


async def test_served_document_points_servers_at_the_root_path() -> None:
    settings = Settings(secret_key=generate_master_key(), root_path="/functions/v1/api-gateway")
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for url in ("/openapi.json", "/functions/v1/api-gateway/openapi.json"):
            response = await http.get(url)
            assert response.status_code == 200
            assert response.json()["servers"] == [{"url": "/functions/v1/api-gateway"}]


async def test_served_document_without_root_path(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["servers"] == [{"url": "/"}]
    assert document["paths"].keys() == SPEC["paths"].keys()


async def test_real_error_and_health_bodies_match_their_schemas(client: httpx.AsyncClient) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")

    def validator(name: str) -> Any:
        return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})

    validator("Liveness").validate((await client.get("/healthz")).json())
    validator("Readiness").validate((await client.get("/readyz")).json())
    unauthorised = await client.get("/v1/webhooks/subscriptions", headers={"Authorization": "Bearer wbk_nope"})
    assert unauthorised.status_code in (401, 404)  # 404 until the route lands
    validator("Error").validate(unauthorised.json())


async def test_docs_page_renders_openapi_json_without_any_external_resource() -> None:
    settings = Settings(secret_key=generate_master_key(), root_path="/functions/v1/api-gateway")
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for url in ("/docs", "/functions/v1/api-gateway/docs"):
            response = await http.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            # Relative, so under the root path it reads the document of the same mount.
            assert 'fetch("openapi.json")' in response.text and 'href="openapi.json"' in response.text
            # Offline: nothing loaded from elsewhere, and the CSP would refuse it anyway.
            assert "http://" not in response.text and "https://" not in response.text and "//cdn" not in response.text
            policy = response.headers["content-security-policy"]
            assert policy.startswith("default-src 'none'") and "script-src 'sha256-" in policy
