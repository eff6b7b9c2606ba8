"""Endpoint health: failing_since, auto-disable with a reason, and the operational event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from subscriptions.models import Subscription
from synchook.context import AppContext
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription, subscription
from tests.support.receiver import Receiver
from webhooks.health import update_health

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.mark.parametrize("settings_overrides", [{"disable_after": 1, "retry_schedule": (0, 0.7, 0.7, 0.7)}])
async def test_failing_endpoint_is_disabled_and_the_workspace_told(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    receiver.program("/broken", statuses=[500])
    tenant = await make_tenant(app_ctx)
    broken = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/broken"))
    healthy = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/healthy"))
    other = await make_tenant(app_ctx)
    await make_subscription(app_ctx, other.workspace_id, url=receiver.url("/other-workspace"))
    [event_id] = await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    row = await subscription(app_ctx, broken.id)
    assert row.status == "disabled"
    assert row.disabled_reason is not None
    assert row.disabled_reason.startswith("deliveries failed continuously since ")
    assert receiver.count("/broken") == 3  # 0 s, ~0.7 s, ~1.4 s: the third is past disable_after
    [delivery] = await deliveries(app_ctx, subscription_id=broken.id)
    assert delivery.status == "cancelled"
    assert delivery.cancel_reason == f"subscription disabled: {row.disabled_reason}"

    types = [json.loads(r.body)["type"] for r in receiver.requests("/healthy")]
    assert sorted(types) == ["calendar.sync.completed", "webhook.subscription.disabled"]
    notice = next(json.loads(r.body) for r in receiver.requests("/healthy") if b"disabled" in r.body)
    assert notice["data"]["subscription_id"] == broken.id
    assert notice["data"]["workspace_id"] == tenant.workspace_id
    assert notice["data"]["url"] == broken.url
    assert notice["data"]["reason"] == row.disabled_reason
    assert notice["id"] != event_id
    assert receiver.count("/other-workspace") == 0
    # The disabled subscription is not sent (nor even recorded for) its own disabling.
    assert len(await deliveries(app_ctx, subscription_id=broken.id)) == 1
    assert (await subscription(app_ctx, healthy.id)).status == "enabled"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.1)}])
async def test_success_clears_failing_since(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/recovering", statuses=[500, 200])
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/recovering"))
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    row = await subscription(app_ctx, sub.id)
    assert row.status == "enabled" and row.failing_since is None
    assert receiver.count("/recovering") == 2


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0,)}])
async def test_a_failure_starts_the_failing_clock(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/down", statuses=[502])
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/down"))
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    row = await subscription(app_ctx, sub.id)
    assert row.status == "enabled"  # 5 days by default
    assert row.failing_since is not None


async def test_deliveries_for_a_subscription_disabled_meanwhile_are_cancelled(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/paused"))
    await make_events(app_ctx, tenant.workspace_id, count=2, hand_off_now=False)
    await run_worker(with_cron=True)  # the outbox sweeper dispatches them
    assert receiver.count("/paused") == 2

    await make_events(app_ctx, tenant.workspace_id)
    async with app_ctx.db.session() as session:
        row = await session.get(type(await subscription(app_ctx, sub.id)), sub.id)
        assert row is not None
        row.status, row.disabled_reason = "disabled", "paused by the integrator"
    await run_worker()

    assert receiver.count("/paused") == 2
    cancelled = await deliveries(app_ctx, status="cancelled")
    assert [d.cancel_reason for d in cancelled] == ["subscription disabled: paused by the integrator"]


async def test_the_disabled_event_shows_the_url_without_userinfo_query_or_fragment(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    url = "https://hook-user:pa55word@hooks.example.com:8443/in/path?token=s3cret&x=1#frag"
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=url)
    now = utcnow()
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(Subscription).where(Subscription.id == sub.id).values(failing_since=now - timedelta(hours=2))
        )
        [event_id] = await update_health(session, succeeded=(), failed=[sub.id], now=now, disable_after=3600)
    async with app_ctx.db.session() as session:
        event = await session.get(Event, event_id)
    assert event is not None and event.type == "webhook.subscription.disabled"
    assert event.data["url"] == "https://hooks.example.com:8443/in/path"
    assert "s3cret" not in json.dumps(event.data) and "pa55word" not in json.dumps(event.data)
