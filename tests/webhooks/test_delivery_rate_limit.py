"""rate_limit_per_second holds across workers: the limiter lives in Redis, not in a process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq.worker import Worker

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


@pytest.mark.xdist_group("heavy")
@pytest.mark.parametrize("settings_overrides", [{"delivery_batch_size": 2}])
async def test_rate_limit_holds_across_two_workers(
    app_ctx: AppContext, receiver: Receiver, make_worker: Callable[..., Worker]
) -> None:
    limit, events = 4, 14
    tenant = await make_tenant(app_ctx)
    limited = await make_subscription(
        app_ctx, tenant.workspace_id, url=receiver.url("/limited"), rate_limit_per_second=limit
    )
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/free"))
    await make_events(app_ctx, tenant.workspace_id, count=events)

    workers = [make_worker(), make_worker()]
    await asyncio.gather(*(w.main() for w in workers))

    arrivals = [r.at for r in receiver.requests("/limited")]
    assert len(arrivals) == events
    assert max_in_any_second(arrivals) <= limit
    assert max(arrivals) - min(arrivals) >= (events - 1) / limit * 0.95
    assert receiver.count("/free") == events  # the limit is per subscription
    assert sum(w.jobs_complete for w in workers) > 2
    # Waiting for the limiter is not an attempt: one attempt each, nothing of the schedule consumed.
    rows = await deliveries(app_ctx, subscription_id=limited.id)
    assert {r.status for r in rows} == {"succeeded"} and {r.attempt_count for r in rows} == {1}
    assert [len(await attempts(app_ctx, r.id)) for r in rows] == [1] * events


def test_max_in_any_second_counts_a_sliding_window() -> None:
    samples: list[Any] = [0.0, 0.5, 0.99, 1.0, 1.5]
    assert max_in_any_second(samples) == 3
