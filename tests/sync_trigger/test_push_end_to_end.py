"""Push end to end (CONTRACT §7), nothing stubbed: the first sync gives the calendar a channel at the fake provider
(Google events.watch; Graph POST /subscriptions with its validation handshake against our API), an edit at the
fake makes the fake notify our API, the notification makes a push job on the worker, and the change reaches a
subscriber as calendar.event.updated. No poll runs (background sync off): only push can bring the change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import select
from sqlmodel import col

from sync_trigger.models import SyncJob
from sync_trigger.push.models import PushChannel
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription
from tests.support.receiver import Receiver
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon
from tests.support.workers import running

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

DEADLINE = 60.0
EDIT = {"google": {"summary": "Standup (moved)"}, "microsoft": {"subject": "Standup (moved)"}}


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server, push_debounce=0.2, background_sync_interval=0)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def poll(check: Callable[[], Awaitable[bool]], *, what: str) -> None:
    try:
        async with asyncio.timeout(DEADLINE):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE}s: {what}")


async def push_jobs(ctx: AppContext) -> list[SyncJob]:
    async with ctx.db.session() as session:
        rows = await session.execute(select(SyncJob).where(col(SyncJob.trigger) == "push"))
        return list(rows.scalars())


@pytest.mark.parametrize("provider", ["google", "microsoft"])
async def test_an_edit_at_the_provider_reaches_a_subscriber_through_push(
    app_ctx: AppContext,
    settings: Settings,
    api_url: str,
    client: httpx.AsyncClient,
    fake: FakeProviders,
    make_worker: Callable[..., Worker],
    receiver: Receiver,
    provider: str,
) -> None:
    fake.add_account(provider, ALICE)
    tenant = await make_tenant(app_ctx)
    h = SyncHarness(app_ctx, fake, tenant.workspace_id)
    event_id = fake.put_event(provider, ALICE, ALICE, summary="Standup", start=soon())
    await h.connect(provider)
    await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/hook"), event_types=["calendar.event.updated"]
    )
    # Push on, at this test's API: the worker gives calendars channels whose notifications come here.
    worker = make_worker(burst=False, settings=settings.model_copy(update={"public_url": api_url}))
    async with running(worker):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).status_code == 202

        async def channel_active() -> bool:
            async with app_ctx.db.session() as session:
                rows = (await session.execute(select(col(PushChannel.status)))).scalars().all()
            return list(rows) == ["active"]

        await poll(channel_active, what="the calendar's channel is active")
        fake.edit_event(provider, ALICE, ALICE, event_id, EDIT[provider])
        try:
            [delivery] = await receiver.wait_for(1, path="/hook", timeout=DEADLINE)
        except TimeoutError:
            pytest.fail(f"no calendar.event.updated within {DEADLINE}s; fake sent {fake.push_deliveries(provider)}")

        async def push_job_done() -> bool:
            return [j.status for j in await push_jobs(app_ctx)] == ["completed"]

        await poll(push_job_done, what="the push job completed")
    body = json.loads(delivery.body)
    assert body["type"] == "calendar.event.updated"
    assert "Standup (moved)" in delivery.body.decode()
    [job] = await push_jobs(app_ctx)
    assert job.stats is not None and job.stats["events_updated"] == 1


async def test_graph_subscription_removed_makes_a_new_subscription_and_a_sync(
    app_ctx: AppContext,
    settings: Settings,
    api_url: str,
    client: httpx.AsyncClient,
    fake: FakeProviders,
    make_worker: Callable[..., Worker],
) -> None:
    fake.add_account("microsoft", ALICE)
    tenant = await make_tenant(app_ctx)
    h = SyncHarness(app_ctx, fake, tenant.workspace_id)
    await h.connect("microsoft")
    worker = make_worker(burst=False, settings=settings.model_copy(update={"public_url": api_url}))
    async with running(worker):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).status_code == 202

        async def channel_ids() -> list[tuple[str | None, str]]:
            async with app_ctx.db.session() as session:
                rows = await session.execute(select(col(PushChannel.channel_id), col(PushChannel.status)))
            return [(r[0], r[1]) for r in rows]

        async def one_active() -> bool:
            return [status for _, status in await channel_ids()] == ["active"]

        await poll(one_active, what="the subscription is active")
        [(removed, _)] = await channel_ids()
        assert removed is not None
        fake.put_event("microsoft", ALICE, ALICE, summary="While removed", start=soon())
        fake.drop_notifications()  # the change's own notification is lost: only the lifecycle's sync brings it
        fake.send_lifecycle(removed, "subscriptionRemoved")

        async def replaced() -> bool:
            rows = await channel_ids()
            return len(rows) == 1 and rows[0][1] == "active" and rows[0][0] != removed

        await poll(replaced, what="a new subscription replaced the removed one")

        async def synced() -> bool:
            return [j.status for j in await push_jobs(app_ctx)] == ["completed"]

        await poll(synced, what="the calendar was synced")
    assert [c.id for c in fake.push_channels("microsoft")] != [removed]
    assert "While removed" in {e.summary for e in (await h.events()).values()}
