"""PostgreSQL goes away between a send and its record: the outcome is written once it is back, and the
receiver does not get the delivery again (before, the record failed and the whole batch was resent)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq.worker import Worker

from synchook.context import AppContext
from tests.chaos.conftest import PgCluster
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import running, wait_until
from webhooks.models import Delivery

pytestmark = [
    pytest.mark.xdist_group("heavy"),
    pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning"),
]

EVENTS = 5
REPLY_AFTER = 1.0  # the receiver answers this long after each request arrives: PostgreSQL is down by then


@pytest.fixture
def database_url(database: str) -> str:
    return database  # the throwaway cluster, which this test stops


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"delivery_lease_seconds": 10, "delivery_timeout": 10.0}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def settled(ctx: AppContext) -> list[Delivery]:
    """The delivery rows once all are succeeded (riding out connections the restart left dead)."""
    async with asyncio.timeout(30):
        while True:
            try:
                rows = await deliveries(ctx)
            except Exception:
                rows = []
            if rows and {d.status for d in rows} == {"succeeded"}:
                return rows
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_outcomes_sent_before_a_database_outage_are_recorded_after_it(
    app_ctx: AppContext, pg_cluster: PgCluster, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    receiver.program("/hold", statuses=[200], delay=REPLY_AFTER)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hold"))
    events = await make_events(app_ctx, tenant.workspace_id, count=EVENTS)

    async with running(make_worker(burst=False, with_cron=True)):
        await wait_until(lambda: receiver.count("/hold") == EVENTS, timeout=15)
        await asyncio.to_thread(pg_cluster.stop, "fast")  # the answers come back while it is down
        try:
            await asyncio.sleep(REPLY_AFTER + 1.5)
        finally:
            await asyncio.to_thread(pg_cluster.start)
        rows = await settled(app_ctx)
        await asyncio.sleep(1.0)  # time for a wrongly repeated send to show up

    assert len(rows) == EVENTS
    assert receiver.count("/hold") == EVENTS  # nobody got a duplicate
    assert {r.headers["webhook-id"] for r in receiver.requests("/hold")} == set(events)
    for row in rows:
        assert [a.status_code for a in await attempts(app_ctx, row.id)] == [200]
