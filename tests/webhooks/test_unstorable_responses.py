"""A receiver cannot poison the recorder's group commit, which holds other tenants' outcomes too (CONTRACT §5).

What a receiver sends is made storable where it enters (NUL and lone surrogates become U+FFFD); a flush the
database still refuses is recorded one outcome at a time, so a bad row can only fail itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from synchook.context import AppContext
from synchook.outbox import hand_off
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from webhooks.delivery.claim import claim_rows
from webhooks.delivery.lease import Lease
from webhooks.delivery.recorder import UNSTORABLE_ERROR, Recorder
from webhooks.delivery.stages import Sent
from webhooks.dispatch import dispatch_events
from webhooks.sender import Outcome

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

EVENTS = 5


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0,)}])
async def test_a_receiver_answering_nul_fails_only_its_own_attempts(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    receiver.program("/a", statuses=[500], body=b"a\x00b")
    tenant_a, tenant_b = await make_tenant(app_ctx), await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant_a.workspace_id, url=receiver.url("/a"))
    healthy = await make_subscription(app_ctx, tenant_b.workspace_id, url=receiver.url("/b"))
    # One hand-off: both workspaces' deliveries are sent by one batch, and recorded by shared flushes.
    events = [
        *await make_events(app_ctx, tenant_a.workspace_id, count=EVENTS, hand_off_now=False),
        *await make_events(app_ctx, tenant_b.workspace_id, count=EVENTS, hand_off_now=False),
    ]
    assert await hand_off(app_ctx.enqueue, events)

    await run_worker()

    poisoned = await deliveries(app_ctx, workspace_id=tenant_a.workspace_id)
    assert len(poisoned) == EVENTS and {d.status for d in poisoned} == {"dead"}
    for delivery in poisoned:
        [attempt] = await attempts(app_ctx, delivery.id)
        assert attempt.status_code == 500 and attempt.response_body == "a\ufffdb"
    assert receiver.count("/a") == EVENTS
    served = await deliveries(app_ctx, subscription_id=healthy.id)
    assert len(served) == EVENTS and {d.status for d in served} == {"succeeded"}
    assert sorted(r.headers["webhook-id"] for r in receiver.requests("/b")) == sorted(events[EVENTS:])


@contextlib.asynccontextmanager
async def raw_receiver(response: bytes) -> AsyncIterator[str]:
    """A receiver answering every request with ``response``, bytes as given (aiohttp's server would not send
    invalid UTF-8 in a header)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        await reader.readexactly(length)
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("settings_overrides", [{"retry_schedule": (0,)}])
async def test_a_redirect_to_invalid_utf8_is_recorded_with_u_fffd(app_ctx: AppContext, run_worker: Run) -> None:
    # aiohttp reads the Location header's invalid bytes as lone surrogates, which neither database driver encodes.
    response = (
        b"HTTP/1.1 302 Found\r\nLocation: https://x.example/\xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with raw_receiver(response) as url:
        tenant = await make_tenant(app_ctx)
        await make_subscription(app_ctx, tenant.workspace_id, url=url)
        await make_events(app_ctx, tenant.workspace_id)
        await run_worker()
    [delivery] = await deliveries(app_ctx)
    assert delivery.status == "dead"
    [attempt] = await attempts(app_ctx, delivery.id)
    assert attempt.status_code == 302
    assert attempt.error == "HTTP 302: redirect to https://x.example/\ufffd\ufffd not followed"
    assert delivery.last_error == attempt.error


async def test_a_flush_the_database_refuses_is_recorded_one_outcome_at_a_time(app_ctx: AppContext) -> None:
    """The second layer, reached with the sender's replacement bypassed: one unstorable outcome in a flush of
    two workspaces' outcomes. The other is recorded as it was; the bad one as a failed attempt without the
    receiver's text, so it is retried on schedule (and ends dead), never sent again and again unrecorded."""
    tenant_a, tenant_b = await make_tenant(app_ctx), await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant_a.workspace_id, url="http://127.0.0.1:9/a")
    await make_subscription(app_ctx, tenant_b.workspace_id, url="http://127.0.0.1:9/b")
    events = [
        *await make_events(app_ctx, tenant_a.workspace_id, hand_off_now=False),
        *await make_events(app_ctx, tenant_b.workspace_id, hand_off_now=False),
    ]
    await dispatch_events(app_ctx, events, worker=None)  # no worker runtime here: the rows are made, none is sent
    now = utcnow()
    lease = Lease(now + timedelta(seconds=60), [])
    async with app_ctx.db.session() as session:
        claimed = await claim_rows(session, [d.id for d in await deliveries(app_ctx)], now=now, lease=lease)
    lease.ids = [c.id for c in claimed]
    by_workspace = {c.workspace_id: c for c in claimed}
    bad, good = by_workspace[tenant_a.workspace_id], by_workspace[tenant_b.workspace_id]
    assert bad.number == good.number == 1
    # A lone surrogate: no driver encodes it (on PostgreSQL a NUL fails the same way, at the server).
    sent = [
        Sent(bad, Outcome(now, 3, status_code=500, error="HTTP 500", response_body="a\ud800b")),
        Sent(good, Outcome(now, 4, status_code=200, response_body="ok")),
    ]

    recorder = Recorder(app_ctx)
    plan = await asyncio.wait_for(recorder.submit(lease, sent), timeout=20)
    await recorder.close()

    [good_row] = await deliveries(app_ctx, id=good.id)
    assert good_row.status == "succeeded"
    assert [(a.status_code, a.response_body) for a in await attempts(app_ctx, good.id)] == [(200, "ok")]
    [bad_row] = await deliveries(app_ctx, id=bad.id)
    assert bad_row.status == "failed" and bad_row.attempt_count == 1 and bad_row.lease_owner is None
    assert bad_row.last_error == UNSTORABLE_ERROR
    [attempt] = await attempts(app_ctx, bad.id)
    assert (attempt.status_code, attempt.error, attempt.response_body) == (500, UNSTORABLE_ERROR, None)
    assert set(lease.recorded) == {good.id, bad.id}
    assert set(plan.retries) == {bad.id} and plan.outcomes == {"succeeded": 1, "failed": 1}
