"""Workspace isolation: every /v1 operation that takes an id answers 404 not_found for another workspace's ids.

The operations are walked from the OpenAPI spec and the app's routes (tests/security/conftest.id_operations), so a
new id route is covered the day it lands; one whose id kind this test cannot name fails loudly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from sqlalchemy import select

from synchook.context import AppContext
from synchook.fakes import FakeProviders
from tests.security.conftest import World, id_operations, make_world, path_param, provider_overrides
from tests.support.receiver import Receiver
from webhooks.models import Delivery

# Bodies that would succeed for the owner, so a 404 is the id check speaking, not body validation.
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("PATCH", "/v1/webhooks/subscriptions/{id}"): {"description": "taken over"},
    ("POST", "/v1/webhooks/subscriptions/{id}/secret/rotate"): {"expire_previous_in": 0},
}


@dataclass(frozen=True)
class FullWorld:
    base: World
    delivery_id: str
    replay_id: str

    def id_for(self, template: str) -> str:
        kind = path_param(template)
        if kind == "connection_id":
            return self.base.connection_id
        if kind == "job_id":
            return self.base.job_id
        if template.startswith("/v1/webhooks/subscriptions/"):
            return self.base.subscription_id
        if template.startswith("/v1/webhooks/deliveries/"):
            return self.delivery_id
        if template.startswith("/v1/webhooks/replays/"):
            return self.replay_id
        raise AssertionError(f"no id of this workspace for {template}: teach test_isolation.py about it")


async def make_full_world(
    ctx: AppContext, client: httpx.AsyncClient, receiver: Receiver, run_worker: Callable[..., Awaitable[Worker]]
) -> FullWorld:
    base = await make_world(ctx, client)
    headers = base.tenant.headers
    # Point the subscription at a receiver that fails, so deliveries exist and are replayable.
    receiver.program("/fail", statuses=(500,))
    patched = await client.patch(
        f"/v1/webhooks/subscriptions/{base.subscription_id}", headers=headers, json={"url": receiver.url("/fail")}
    )
    assert patched.status_code == 200, patched.text
    assert (
        await client.post(f"/v1/webhooks/subscriptions/{base.subscription_id}/test", headers=headers)
    ).status_code == 202
    await run_worker()
    async with ctx.db.session() as session:
        delivery = (
            (await session.execute(select(Delivery).where(Delivery.workspace_id == base.tenant.workspace_id)))  # type: ignore[arg-type]
            .scalars()
            .first()
        )
    assert delivery is not None, "the delivery engine made no delivery"
    replay = await client.post(
        "/v1/webhooks/replays", headers=headers, json={"since": "2000-01-01T00:00:00Z", "status": ["failed", "dead"]}
    )
    assert replay.status_code == 202, replay.text
    return FullWorld(base=base, delivery_id=delivery.id, replay_id=replay.json()["data"]["id"])


@pytest.fixture
def settings_overrides(fake_providers: FakeProviders) -> dict[str, Any]:
    return provider_overrides(fake_providers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def _call(
    client: httpx.AsyncClient, method: str, template: str, world: FullWorld, key_of: World
) -> httpx.Response:
    path = template.replace("{" + path_param(template) + "}", world.id_for(template))
    body = BODIES.get((method, template), {} if method in {"POST", "PATCH"} else None)
    return await client.request(method, path, headers=key_of.tenant.headers, json=body)


async def test_every_id_route_is_404_for_another_workspaces_ids(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    receiver: Receiver,
    run_worker: Callable[..., Awaitable[Worker]],
) -> None:
    ours = await make_full_world(app_ctx, client, receiver, run_worker)
    theirs = await make_full_world(app_ctx, client, receiver, run_worker)
    operations = id_operations()
    assert len(operations) >= 12

    leaks = []
    for method, template in operations:
        response = await _call(client, method, template, theirs, ours.base)
        if response.status_code != 404 or response.json()["error"]["code"] != "not_found":
            leaks.append(f"{method} {template}: {response.status_code} {response.text[:200]}")
        elif theirs.id_for(template) in response.text:
            leaks.append(f"{method} {template}: the 404 echoes the other workspace's id")
    assert not leaks, "\n".join(leaks)

    # And the owner still reaches (and still has) every object: the attempts above changed nothing.
    for method, template in operations:
        if method != "GET":
            continue
        response = await _call(client, method, template, theirs, theirs.base)
        assert response.status_code == 200, f"{template}: {response.status_code} {response.text[:200]}"


async def test_lists_and_filters_never_show_another_workspaces_rows(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    receiver: Receiver,
    run_worker: Callable[..., Awaitable[Worker]],
) -> None:
    ours = await make_full_world(app_ctx, client, receiver, run_worker)
    theirs = await make_full_world(app_ctx, client, receiver, run_worker)
    their_ids = {
        theirs.base.connection_id,
        theirs.base.subscription_id,
        theirs.base.job_id,
        theirs.delivery_id,
        theirs.replay_id,
        theirs.base.tenant.workspace_id,
    }
    lists = [
        ("/v1/calendar/connections", {}),
        ("/v1/calendar/events", {}),
        ("/v1/webhooks/subscriptions", {}),
        ("/v1/webhooks/events", {}),
        ("/v1/webhooks/deliveries", {}),
        ("/v1/webhooks/deliveries", {"subscription_id": theirs.base.subscription_id}),
        ("/v1/webhooks/replays", {}),
    ]
    for path, params in lists:
        response = await client.get(path, params={**params, "limit": 100}, headers=ours.base.tenant.headers)
        assert response.status_code in {200, 422}, f"{path}: {response.status_code}"
        leaked = [i for i in their_ids if i in response.text]
        assert not leaked, f"{path} {params} shows {leaked}"
    # A bulk replay naming their subscription matches nothing of theirs.
    replay = await client.post(
        "/v1/webhooks/replays?dry_run=true",
        headers=ours.base.tenant.headers,
        json={"since": "2000-01-01T00:00:00Z", "subscription_id": theirs.base.subscription_id},
    )
    assert replay.status_code in {200, 404, 422}, replay.text
    if replay.status_code == 200:
        assert replay.json()["data"]["matched"] == 0
