from __future__ import annotations

import httpx

from synchook.context import AppContext
from tests.factories import make_tenant


async def test_healthz_has_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")


async def test_caller_request_id_is_echoed_when_sane(client: httpx.AsyncClient) -> None:
    sane = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert sane.headers["x-request-id"] == "abc-123"
    hostile = await client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 300})
    assert hostile.headers["x-request-id"].startswith("req_")


async def test_readyz_checks_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_unknown_route_uses_error_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert error["request_id"] == response.headers["x-request-id"]


async def test_tenant_factory_makes_a_key(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    assert tenant.key.startswith("wbk_")
    assert tenant.key_id.startswith("key_")
