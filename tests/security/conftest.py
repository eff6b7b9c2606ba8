"""Shared helpers of the security suite: a tenant with one of everything, raw HTTP for what httpx refuses to send."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Route

from synchook.app import api_routes, openapi_document
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from tests.factories import Tenant, make_tenant


@pytest.fixture(scope="session")
def providers_server() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
def fake_providers(providers_server: FakeProviders) -> FakeProviders:
    """The fake Google/Microsoft: sync jobs run by a worker finish in milliseconds instead of retrying DNS."""
    providers_server.reset()
    return providers_server


def provider_overrides(providers: FakeProviders) -> dict[str, Any]:
    return providers.endpoint_kwargs()


@dataclass(frozen=True)
class World:
    """One workspace holding a connection, a sync job and a subscription, created through the API."""

    tenant: Tenant
    connection_id: str
    job_id: str
    subscription_id: str


async def make_world(ctx: AppContext, client: httpx.AsyncClient, *, token: str = "at") -> World:
    tenant = await make_tenant(ctx)
    connection = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={
            "provider": "google",
            "account": f"{tenant.workspace_id.lower()}@example.com",
            "access_token": f"{token}-access",
            "refresh_token": f"{token}-refresh",
        },
    )
    assert connection.status_code == 201, connection.text
    subscription = await client.post(
        "/v1/webhooks/subscriptions",
        headers=tenant.headers,
        json={"url": "https://example.com/hook", "event_types": ["*"], "description": "mine"},
    )
    assert subscription.status_code == 201, subscription.text
    job = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})
    assert job.status_code == 202, job.text
    return World(
        tenant=tenant,
        connection_id=connection.json()["data"]["id"],
        job_id=job.json()["data"]["job_id"],
        subscription_id=subscription.json()["data"]["id"],
    )


@pytest.fixture
async def world(app_ctx: AppContext, client: httpx.AsyncClient) -> World:
    return await make_world(app_ctx, client)


def id_operations() -> list[tuple[str, str]]:
    """(METHOD, path template) of every /v1 operation taking an id in its path: documented ones and routed ones,
    so a route the spec forgot is still covered."""
    spec = openapi_document()
    found = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/") and "{" in path
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    for route in api_routes():
        if isinstance(route, Route) and "{" in route.path:
            found.update((method, "/v1" + route.path) for method in route.methods or () if method != "HEAD")
    return sorted(found, key=lambda op: (op[1], op[0]))


def path_param(template: str) -> str:
    return template.split("{", 1)[1].split("}", 1)[0]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(base_url: str, head: bytes, body: bytes = b"") -> RawResponse:
    """Send bytes as they are (no normalisation of the path, no header validation) and read one response."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, payload = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status=status, headers=headers, body=payload)
