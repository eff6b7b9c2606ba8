"""Failures: every attempt recorded, retried on schedule with the same webhook-id, then dead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from synchook.context import AppContext
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.constants import RESPONSE_BODY_LIMIT

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def one_delivery(app_ctx: AppContext, receiver: Receiver, path: str) -> str:
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url(path))
    [event_id] = await make_events(app_ctx, tenant.workspace_id)
    return event_id


async def test_500_then_200_is_retried_with_the_same_id(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    receiver.program("/flaky", statuses=[500, 200], body=b'{"error":"boom"}')
    event_id = await one_delivery(app_ctx, receiver, "/flaky")

    await run_worker()

    requests = receiver.requests("/flaky")
    assert [r.headers["webhook-id"] for r in requests] == [event_id, event_id]
    assert requests[1].body == requests[0].body
    assert requests[1].at - requests[0].at >= 0.2 * 0.8 - 0.01  # schedule[1] = 0.2 s, -20% jitter
    [delivery] = await deliveries(app_ctx)
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == ("succeeded", 2, 200)
    assert delivery.completed_at is not None and delivery.lease_until is None
    first, second = await attempts(app_ctx, delivery.id)
    assert (first.number, first.status_code, first.response_body, first.error) == (
        1,
        500,
        '{"error":"boom"}',
        "HTTP 500",
    )
    assert (second.number, second.status_code, second.error) == (2, 200, None)
    assert first.duration_ms >= 0 and second.started_at > first.started_at


async def test_dead_after_the_schedule(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/down", statuses=[503])
    await one_delivery(app_ctx, receiver, "/down")

    await run_worker()

    assert receiver.count("/down") == 3  # schedule (0, 0.2, 0.4): three attempts
    [delivery] = await deliveries(app_ctx)
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == ("dead", 3, 503)
    assert delivery.completed_at is not None and delivery.next_attempt_at is None
    assert [a.number for a in await attempts(app_ctx, delivery.id)] == [1, 2, 3]


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05)}])
async def test_retry_after_is_honoured(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/busy", statuses=[429, 200], retry_after="1")
    await one_delivery(app_ctx, receiver, "/busy")

    await run_worker()

    first, second = receiver.requests("/busy")
    assert second.at - first.at >= 0.95  # not the schedule's 0.05 s
    [delivery] = await deliveries(app_ctx)
    assert delivery.status == "succeeded"


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05), "max_retry_after": 0.3}])
async def test_retry_after_is_bounded(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/greedy", statuses=[503, 200], retry_after="86400")
    await one_delivery(app_ctx, receiver, "/greedy")

    await run_worker()

    first, second = receiver.requests("/greedy")
    assert 0.25 <= second.at - first.at < 2


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05), "delivery_timeout": 0.3}])
async def test_timeout_is_a_failed_attempt(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/slow", statuses=[200], delay=1.5)
    await one_delivery(app_ctx, receiver, "/slow")

    await run_worker()

    [delivery] = await deliveries(app_ctx)
    assert delivery.status == "dead"
    tries = await attempts(app_ctx, delivery.id)
    assert len(tries) == 2
    for attempt in tries:
        assert attempt.status_code is None
        assert attempt.error is not None and attempt.error.startswith("timeout")
        assert 250 <= attempt.duration_ms < 1400


async def test_redirect_is_not_followed(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/moved", statuses=[302], location=receiver.url("/elsewhere"))
    await one_delivery(app_ctx, receiver, "/moved")

    await run_worker()

    assert receiver.count("/elsewhere") == 0
    [delivery] = await deliveries(app_ctx)
    assert (delivery.status, delivery.last_status_code) == ("dead", 302)
    first = (await attempts(app_ctx, delivery.id))[0]
    assert first.status_code == 302 and first.error is not None and "not followed" in first.error


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0, 0.05)}])
async def test_connection_errors_are_recorded_and_retried(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    receiver.program("/reset", statuses=[200], close=True)
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/reset"))
    await make_subscription(app_ctx, tenant.workspace_id, url="http://127.0.0.1:1/refused")
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    rows = await deliveries(app_ctx)
    assert len(rows) == 2 and {r.status for r in rows} == {"dead"}
    for row in rows:
        tries = await attempts(app_ctx, row.id)
        assert len(tries) == 2
        assert all(t.status_code is None and t.error for t in tries)
    errors = {t.error for r in rows for t in await attempts(app_ctx, r.id)}
    assert any(e is not None and e.startswith("connection error") for e in errors)
    assert any(e is not None and "closed" in e for e in errors)


@pytest.mark.parametrize("settings_overrides", [{"allow_private_targets": False, "retry_schedule": (0,)}])
async def test_private_targets_are_refused_at_delivery(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    await one_delivery(app_ctx, receiver, "/private")

    await run_worker()

    assert receiver.count() == 0
    [delivery] = await deliveries(app_ctx)
    [attempt] = await attempts(app_ctx, delivery.id)
    assert delivery.status == "dead"
    assert attempt.status_code is None and attempt.error is not None and attempt.error.startswith("forbidden target")


async def test_response_body_is_truncated(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    receiver.program("/big", statuses=[200], body=b"x" * (RESPONSE_BODY_LIMIT * 10))
    await one_delivery(app_ctx, receiver, "/big")

    await run_worker()

    [delivery] = await deliveries(app_ctx)
    [attempt] = await attempts(app_ctx, delivery.id)
    assert attempt.response_body == "x" * RESPONSE_BODY_LIMIT
