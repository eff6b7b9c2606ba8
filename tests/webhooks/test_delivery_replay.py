"""The engine's side of replay: reset_for_replay + schedule_deliveries start a fresh retry sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from synchook.context import AppContext
from synchook.outbox import undispatched_event_ids
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.delivery.rows import reset_for_replay
from webhooks.delivery.schedule import schedule_deliveries
from webhooks.dispatch import dispatch_events

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05)}])
async def test_replayed_dead_delivery_is_sent_again_with_the_same_id(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    receiver.program("/later", statuses=[500, 500, 200])
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/later"))
    [event_id] = await make_events(app_ctx, tenant.workspace_id)
    await run_worker()
    [dead] = await deliveries(app_ctx)
    assert dead.status == "dead"

    async with app_ctx.db.session() as session:
        reset = await reset_for_replay(session, [dead.id], workspace_id=tenant.workspace_id, now=utcnow())
    assert reset == [dead.id]
    await schedule_deliveries(app_ctx, reset)
    await run_worker()

    [replayed] = await deliveries(app_ctx)
    assert (replayed.status, replayed.attempt_count, replayed.replays) == ("succeeded", 1, 1)
    assert [a.number for a in await attempts(app_ctx, dead.id)] == [1, 2, 3]  # the count continues
    assert {r.headers["webhook-id"] for r in receiver.requests("/later")} == {event_id}


async def test_pending_deliveries_and_other_workspaces_are_not_reset(app_ctx: AppContext, receiver: Receiver) -> None:
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/x"))
    await make_events(app_ctx, tenant.workspace_id, hand_off_now=False)
    async with app_ctx.db.session() as session:
        ids = await undispatched_event_ids(session, older_than=timedelta(0))
    await dispatch_events(app_ctx, ids, worker=None)
    [pending] = await deliveries(app_ctx)
    assert pending.status == "pending"

    async with app_ctx.db.session() as session:
        assert await reset_for_replay(session, [pending.id], workspace_id=tenant.workspace_id, now=utcnow()) == []
        assert await reset_for_replay(session, [pending.id], workspace_id="ws_other", now=utcnow()) == []
