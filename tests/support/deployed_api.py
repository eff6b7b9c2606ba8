"""The API with a context of its own, as `synchook api` opens it, for tests of what only that context does (its Redis
client has a socket timeout, so redis-py runs each write in a task; the rate limit and the POSTs' enqueues go out on
its pipelined connection)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import NamedTuple

import httpx

from synchook.context import AppContext
from synchook.root.app import create_app
from synchook.settings import Settings
from tests.factories import Tenant, make_tenant
from tests.factories.webhooks import make_subscription


class DeployedApi(NamedTuple):
    http: httpx.AsyncClient
    tenant: Tenant
    subscription_path: str  # /v1/webhooks/subscriptions/{id} of the tenant's one subscription
    ctx: AppContext


@contextlib.asynccontextmanager
async def api_as_deployed(settings: Settings) -> AsyncIterator[DeployedApi]:
    """A client of that API, a tenant with one subscription, and the context."""
    ctx = await AppContext.open(settings)
    try:
        tenant = await make_tenant(ctx)
        sub = await make_subscription(ctx, tenant.workspace_id, url="https://example.com/hook")
        transport = httpx.ASGITransport(app=create_app(settings, context=ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield DeployedApi(http, tenant, f"/v1/webhooks/subscriptions/{sub.id}", ctx)
    finally:
        await ctx.close()
