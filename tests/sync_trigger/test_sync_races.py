"""Concurrent requests over real HTTP: the hourly cap and idempotency keys hold under a race."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
from sqlalchemy import func, select

from sync_trigger.models import Connection, SyncJob
from synchook.context import AppContext
from synchook.outbox import Event
from tests.factories import Tenant, make_tenant


async def connected_tenant(app_ctx: AppContext, client: httpx.AsyncClient) -> Tenant:
    tenant = await make_tenant(app_ctx)
    response = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={"provider": "google", "account": "a@example.com", "access_token": "at", "refresh_token": "rt"},
    )
    assert response.status_code == 201
    return tenant


async def count_rows(ctx: AppContext, model: type[SyncJob] | type[Event] | type[Connection]) -> int:
    async with ctx.db.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_ten_concurrent_syncs_with_five_slots_left_accept_exactly_five(
    app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    tenant = await connected_tenant(app_ctx, client)
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 202
    responses = await asyncio.gather(*(client.post("/v1/calendar/sync", headers=tenant.headers) for _ in range(10)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 5, 429: 5}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"rate_limited"}
    remaining = sorted(int(r.headers["x-ratelimit-remaining"]) for r in responses if r.status_code == 202)
    assert remaining == [0, 1, 2, 3, 4]
    assert await count_rows(app_ctx, SyncJob) == 6
    assert await count_rows(app_ctx, Event) == 6


async def test_fifty_concurrent_requests_with_one_idempotency_key_make_one_job(
    app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    tenant = await connected_tenant(app_ctx, client)
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
    responses = await asyncio.gather(
        *(client.post("/v1/calendar/sync", headers=headers, json={"mode": "full"}) for _ in range(50))
    )
    accepted = [r for r in responses if r.status_code == 202]
    others = [r for r in responses if r.status_code != 202]
    assert {r.status_code for r in others} <= {409}
    assert {r.json()["error"]["code"] for r in others} <= {"idempotency_in_progress"}
    assert len({r.json()["data"]["job_id"] for r in accepted}) == 1
    assert sum(1 for r in accepted if "idempotent-replayed" not in r.headers) == 1
    assert await count_rows(app_ctx, SyncJob) == 1
    assert await count_rows(app_ctx, Event) == 1
    # Afterwards every retry is a replay.
    again = await client.post("/v1/calendar/sync", headers=headers, json={"mode": "full"})
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"


async def test_concurrent_full_syncs_queue_exactly_one(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    tenant = await connected_tenant(app_ctx, client)
    responses = await asyncio.gather(
        *(client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"}) for _ in range(5))
    )
    assert Counter(r.status_code for r in responses) == {202: 1, 409: 4}
    assert await count_rows(app_ctx, SyncJob) == 1


async def test_concurrent_duplicate_connections_create_one(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    tenant = await make_tenant(app_ctx)
    body = {"provider": "microsoft", "account": "b@example.com", "access_token": "at", "refresh_token": "rt"}
    responses = await asyncio.gather(
        *(client.post("/v1/calendar/connections", headers=tenant.headers, json=body) for _ in range(8))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 7}
    assert await count_rows(app_ctx, Connection) == 1
