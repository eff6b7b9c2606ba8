"""POST /v1/webhooks/deliveries/{id}/replay: a fresh retry sequence, same webhook-id, refusals, audit, scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from synchook.context import AppContext
from tests.factories import Tenant, add_key, make_tenant
from tests.factories.admin import delivery, seed_delivery
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.usefixtures("api_url")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05)}])
async def test_dead_delivery_replayed_reaches_the_receiver_with_the_same_webhook_id(
    client: httpx.AsyncClient, app_ctx: AppContext, receiver: Receiver, run_worker: Run, tenant: Tenant
) -> None:
    receiver.program("/hook", statuses=[500, 500, 200])
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
    [event_id] = await make_events(app_ctx, tenant.workspace_id)
    await run_worker()
    [dead] = await deliveries(app_ctx)
    assert dead.status == "dead"

    response = await client.post(f"/v1/webhooks/deliveries/{dead.id}/replay", headers=tenant.headers)
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["id"], data["status"], data["attempt_count"]) == (dead.id, "pending", 0)
    assert data["replay_id"].startswith("rpl_")
    await run_worker()

    assert (await delivery(app_ctx, dead.id)).status == "succeeded"
    assert [r.headers["webhook-id"] for r in receiver.requests("/hook")] == [event_id] * 3
    assert [a.number for a in await attempts(app_ctx, dead.id)] == [1, 2, 3]
    detail = (await client.get(f"/v1/webhooks/deliveries/{dead.id}", headers=tenant.headers)).json()["data"]
    assert [a["status_code"] for a in detail["attempts"]] == [500, 500, 200]


async def test_replay_is_audited(
    client: httpx.AsyncClient, app_ctx: AppContext, receiver: Receiver, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/a"))
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    replay_id = (
        await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    ).json()["data"]["replay_id"]
    trail = (await client.get("/v1/webhooks/replays", headers=tenant.headers)).json()["data"]
    assert [r["id"] for r in trail] == [replay_id]
    entry = trail[0]
    assert (entry["kind"], entry["requested_by"], entry["status"]) == ("single", tenant.key_id, "completed")
    assert entry["criteria"]["delivery_id"] == seeded.delivery_id
    assert entry["criteria"]["event_id"] == seeded.event_id
    assert entry["criteria"]["previous_status"] == "dead"
    assert (entry["matched"], entry["replayed"]) == (1, 1)
    assert entry["created_at"].endswith("Z")


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
async def test_other_finished_or_waiting_statuses_can_be_replayed(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, status: str
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status=status)
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 202
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "pending"


async def test_pending_delivery_is_409_replay_in_progress(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="pending", attempts=[])
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "replay_in_progress"


async def test_delivery_being_sent_is_409_replay_in_progress(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="failed", lease_for=timedelta(minutes=1))
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "replay_in_progress"
    replays = (await client.get("/v1/webhooks/replays", headers=tenant.headers)).json()["data"]
    assert replays == []  # a refused replay leaves no audit entry claiming it happened


async def test_deleted_subscription_is_409_subscription_deleted(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    assert (await client.delete(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers)).status_code == 204
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "subscription_deleted"
    assert sub.id in error["message"]
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"


async def test_disabled_subscription_is_409_subscription_disabled(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x", status="disabled")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "subscription_disabled"


async def test_another_workspaces_delivery_is_404(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, other.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, other.workspace_id, sub.id, status="dead")
    response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=tenant.headers)
    assert response.status_code == 404
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"


async def test_read_webhooks_cannot_replay(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:9/x")
    seeded = await seed_delivery(app_ctx, tenant.workspace_id, sub.id, status="dead")
    for scopes in (["read:webhooks"], ["read:webhooks", "write:webhooks"]):
        key = await add_key(app_ctx, tenant, scopes=scopes)
        response = await client.post(f"/v1/webhooks/deliveries/{seeded.delivery_id}/replay", headers=key.headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_permissions"
    assert (await delivery(app_ctx, seeded.delivery_id)).status == "dead"
