"""A slow endpoint's deliveries in a batch are put off to when one of its slots can take them.

In a batch shared with healthy endpoints, only as many as the slow endpoint has free slots come
back at once (in a job of their own); the rest go straight to their wave, one timeout apart per
``per_subscription_concurrency``, instead of each coming back once only to be put off again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from synchook.context import AppContext
from synchook.queue import QUEUE_NAME
from synchook.settings import Settings
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.statements import statements_run
from tests.support.workers import sends_finished
from webhooks.delivery.prepare import slow_waves
from webhooks.delivery.runtime import Runtime, WorkerContext
from webhooks.dispatch import dispatch_events


@pytest.fixture
def runtime() -> Runtime:
    return Runtime(Settings(per_subscription_concurrency=2, delivery_timeout=2.0))


@pytest.mark.parametrize("mixed", [True, False])
async def test_slow_deliveries_go_to_their_waves(runtime: Runtime, mixed: bool) -> None:
    runtime.mark_slow("sub_slow")
    runtime.in_flight["sub_slow"] = 1  # one of its 2 slots busy: 1 free now
    healthy = ["sub_ok"] * 3 if mixed else []
    slow = ["sub_slow"] * 5
    now = utcnow()
    waves = slow_waves(runtime, healthy + slow, now=now)

    assert [waves.get(i) for i in range(len(healthy))] == [None] * len(healthy)
    seconds = [
        None if (i + len(healthy)) not in waves else (waves[i + len(healthy)] - now) / timedelta(seconds=1)
        for i in range(len(slow))
    ]
    # The free slot: sent by a job of slow ones only, handed back at once from a mixed one.
    assert seconds[0] == (0.0 if mixed else None)
    # The rest, 2 per timeout (2 s) after it, whichever job they were in.
    assert seconds[1:] == [2.0, 2.0, 4.0, 4.0]


async def test_looking_at_a_slow_endpoint_leaves_no_entry_in_flight(runtime: Runtime) -> None:
    # in_flight is a defaultdict: reading a key adds it, and only a send's end takes it out again. A slow endpoint
    # whose deliveries were all put off never has that send, so its entry stayed for the worker's life: one per
    # slow endpoint ever seen.
    runtime.mark_slow("sub_slow")
    slow_waves(runtime, ["sub_ok", "sub_slow", "sub_slow"], now=utcnow())

    assert "sub_slow" not in runtime.in_flight


@pytest.mark.parametrize("settings_overrides", [{"per_subscription_concurrency": 2, "delivery_timeout": 2.0}])
async def test_a_fan_out_puts_off_at_insert_the_rows_of_an_endpoint_it_knows_slow(app_ctx: AppContext) -> None:
    """Due now, each such row was claimed by a deliver job only to be put off there: a claim and a write per row."""
    async with Receiver() as receiver:
        tenant = await make_tenant(app_ctx)
        slow = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/slow"))
        healthy = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/ok"))
        events = await make_events(app_ctx, tenant.workspace_id, count=5, hand_off_now=False)
        worker = WorkerContext.open(app_ctx)
        worker.runtime.mark_slow(slow.id)
        worker.runtime.in_flight[slow.id] = 1  # one of its 2 slots busy: 1 free now
        try:
            with statements_run(lambda sql: sql.startswith("UPDATE deliveries")) as updates:
                began = utcnow()
                await dispatch_events(app_ctx, events, worker=worker)
                await sends_finished(worker)
        finally:
            await worker.close()
        queued = await app_ctx.redis.queued_jobs(queue_name=QUEUE_NAME)  # type: ignore[union-attr]

    assert {d.status for d in await deliveries(app_ctx, subscription_id=healthy.id)} == {"succeeded"}
    put_off = await deliveries(app_ctx, subscription_id=slow.id)
    assert [(d.status, d.attempt_count, d.lease_until) for d in put_off] == [("pending", 0, None)] * 5
    # The free slot's row is due now (a deliver job sends it); the rest in their waves, 2 per timeout (2 s).
    seconds = sorted(round((d.next_attempt_at - began) / timedelta(seconds=1)) for d in put_off)
    assert seconds == [0, 2, 2, 4, 4], seconds
    # Written once, at insert: no claim and no deferral touched them.
    ids = {d.id for d in put_off}
    assert not [sql for sql, params in updates if ids & _strings(params)], updates
    # And enqueued for when they are due: the free slot's at once, the others in deferred jobs.
    due = sorted(round(job.score / 1000 - began.timestamp()) for job in queued if set(job.args[0]) & ids)
    assert due[0] == 0 and due[-1] >= 4, due


def _strings(parameters: Any) -> set[str]:
    """The string values among a statement's parameters, those in arrays included."""
    values = parameters.values() if isinstance(parameters, dict) else parameters
    flat = [v for value in values for v in (value if isinstance(value, (list, tuple)) else (value,))]
    return {v for v in flat if isinstance(v, str)}
