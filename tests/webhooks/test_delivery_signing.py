"""What a receiver gets: §5 body and headers, signed so that the public Standard Webhooks libraries verify it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

import synchook
from synchook.context import AppContext
from synchook.outbox import Event
from synchook.timeutil import isoformat
from tests.factories import make_tenant
from tests.factories.webhooks import make_events, make_subscription
from tests.support.receiver import Received, Receiver
from webhooks import verify

Run = Callable[..., Awaitable[Any]]

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def headers_of(request: Received) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


async def test_body_and_headers_follow_the_contract(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    tenant = await make_tenant(app_ctx)
    await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/hook"))
    [event_id] = await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    [request] = receiver.requests("/hook")
    async with app_ctx.db.session() as session:
        event = await session.get(Event, event_id)
        assert event is not None
    assert request.method == "POST"
    payload = {"id": event.id, "type": event.type, "timestamp": isoformat(event.created_at), "data": event.data}
    assert request.body == json.dumps(payload, separators=(",", ":")).encode()
    headers = headers_of(request)
    assert headers["webhook-id"] == event_id
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"synchook/{synchook.__version__}"
    assert abs(int(headers["webhook-timestamp"]) - request.at) < 5
    assert headers["webhook-signature"].startswith("v1,")


async def test_public_libraries_verify_every_delivery(app_ctx: AppContext, receiver: Receiver, run_worker: Run) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/verify"))
    await make_events(app_ctx, tenant.workspace_id, count=5)
    await make_events(app_ctx, tenant.workspace_id, count=5, type="calendar.sync.failed", provider="microsoft")

    await run_worker()

    requests = receiver.requests("/verify")
    assert len(requests) == 10
    for request in requests:
        headers = headers_of(request)
        standard = StandardWebhook(sub.secret).verify(request.body, headers)
        SvixWebhook(sub.secret).verify(request.body, headers)  # raises WebhookVerificationError if not
        ours = verify(request.body, headers, sub.secret)
        assert standard == ours == json.loads(request.body)
        assert ours["id"] == headers["webhook-id"]


async def test_rotation_overlap_signs_with_both_secrets(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    old = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/rot"), previous_secret=old)
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    [request] = receiver.requests("/rot")
    headers = headers_of(request)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret in (sub.secret, old):
        for signature in signatures:
            alone = {**headers, "webhook-signature": signature}
            try:
                StandardWebhook(secret).verify(request.body, alone)
            except Exception:
                continue
            break
        else:
            pytest.fail("no signature verifies alone with one of the secrets")
    # Each secret verifies the full header too, as a receiver mid-rotation would.
    StandardWebhook(sub.secret).verify(request.body, headers)
    SvixWebhook(old).verify(request.body, headers)


async def test_expired_previous_secret_no_longer_signs(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    old = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    await make_subscription(
        app_ctx,
        tenant.workspace_id,
        url=receiver.url("/expired"),
        previous_secret=old,
        previous_expires_in=timedelta(seconds=-1),
    )
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    [request] = receiver.requests("/expired")
    assert len(headers_of(request)["webhook-signature"].split(" ")) == 1


async def test_ed25519_subscription_gets_v1a_signatures(
    app_ctx: AppContext, receiver: Receiver, run_worker: Run
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url=receiver.url("/ed"), signature_type="ed25519")
    await make_events(app_ctx, tenant.workspace_id)

    await run_worker()

    [request] = receiver.requests("/ed")
    headers = headers_of(request)
    assert headers["webhook-signature"].startswith("v1a,")
    assert sub.public_key is not None
    assert verify(request.body, headers, sub.public_key)["id"] == headers["webhook-id"]
