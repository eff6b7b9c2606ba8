"""An endpoint is marked slow by its own requests' time, never by the time its sends queued behind the worker's
other sends for a worker-wide slot (a busy worker would otherwise mark every healthy endpoint slow)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from subscriptions.models import Subscription
from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription
from tests.support.receiver import Receiver
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.send import send
from webhooks.delivery.stages import Body, Claimed, Ready, Sent
from webhooks.signing import Signer

TIMEOUT = 2.0
# Past half the timeout: the endpoint that answers this late is slow.
HOLD = 1.5


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # One worker-wide slot and one per endpoint: a send waits for the worker's slot, the next for its endpoint's.
    return {"delivery_concurrency": 1, "per_subscription_concurrency": 1, "delivery_timeout": TIMEOUT}


async def _ready(app_ctx: AppContext, workspace_id: str, url: str, event_id: str) -> Ready:
    made = await make_subscription(app_ctx, workspace_id, url=url)
    return _for(app_ctx, made.id, workspace_id, event_id, await _loaded(app_ctx, made.id))


async def _loaded(app_ctx: AppContext, subscription_id: str) -> Subscription:
    async with app_ctx.db.session() as session:
        subscription = await session.get(Subscription, subscription_id)
    assert subscription is not None
    return subscription


def _for(app_ctx: AppContext, subscription_id: str, workspace_id: str, event_id: str, sub: Subscription) -> Ready:
    body = Body.of(event_id, workspace_id, "calendar.sync.completed", datetime.now(UTC), {"n": 1})
    claimed = Claimed.inserted(
        f"dlv_{event_id[4:]}", workspace_id=workspace_id, event_id=event_id, subscription_id=subscription_id
    )
    return Ready(claimed, sub, body, Signer(["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]))


async def test_time_queued_for_the_workers_slots_does_not_make_an_endpoint_slow(app_ctx: AppContext) -> None:
    async with Receiver() as receiver:
        receiver.program("/hold", statuses=[200], delay=HOLD)
        tenant = await make_tenant(app_ctx)
        held = await _ready(app_ctx, tenant.workspace_id, receiver.url("/hold"), "evt_01JAAAAAAAAAAAAAAAAAAAAAAA")
        first = await _ready(app_ctx, tenant.workspace_id, receiver.url("/quick"), "evt_01JBBBBBBBBBBBBBBBBBBBBBBB")
        quick = first.claimed.subscription_id
        second = _for(app_ctx, quick, tenant.workspace_id, "evt_01JCCCCCCCCCCCCCCCCCCCCCCC", first.subscription)
        worker = WorkerContext.open(app_ctx)
        try:
            holding = asyncio.create_task(send(worker, held))
            await receiver.wait_for(1, path="/hold", timeout=10)
            # The first /quick send takes its endpoint's slot and queues for the worker's, for longer than half the
            # timeout; the second queues for the endpoint's slot, and gives up only if the endpoint turns slow.
            results = await asyncio.gather(send(worker, first), send(worker, second))
            assert isinstance(await holding, Sent)
        finally:
            await worker.close()
    assert [type(r).__name__ for r in results] == ["Sent", "Sent"]
    assert all(isinstance(r, Sent) and r.outcome.ok for r in results)
    assert not worker.runtime.is_slow(quick, time.monotonic())
    assert worker.runtime.is_slow(held.claimed.subscription_id, time.monotonic())  # its own request took HOLD
