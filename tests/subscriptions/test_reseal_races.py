"""`synchook secrets rotate` never overwrites a webhook secret rotated between its read and its write."""

from __future__ import annotations

import httpx
import pytest

from subscriptions.models import Subscription
from synchook.context import AppContext
from synchook.crypto import SecretBox, generate_master_key
from synchook.reseal import ResealCount, read_sealed, reseal_rows
from synchook.settings import parse_secret_keys
from tests.factories import Tenant, make_tenant

BASE = "/v1/webhooks/subscriptions"
SECRETS = ("secret_sealed", "previous_secret_sealed")


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def test_a_secret_rotated_between_reseal_read_and_write_survives_and_decrypts(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    body = {"url": "https://receiver.example.com/hooks", "event_types": ["*"]}
    created = (await client.post(BASE, json=body, headers=tenant.headers)).json()["data"]
    new_key = parse_secret_keys(generate_master_key())[0]
    newer = SecretBox([new_key, *app_ctx.settings.secret_keys()])
    table = Subscription.__table__  # type: ignore[attr-defined]

    rows = await read_sealed(app_ctx.db, table, SECRETS)  # the reseal reads the secret...
    response = await client.post(f"{BASE}/{created['id']}/secret/rotate", json={}, headers=tenant.headers)
    assert response.status_code == 200, response.text  # ...the integrator rotates it meanwhile...
    rotated = response.json()["data"]["secret"]
    # ...and the reseal's write loses the race, reads the rotated row again and reseals that.
    assert await reseal_rows(app_ctx.db, newer, table, SECRETS, rows) == ResealCount(changed=1)

    async with app_ctx.db.session() as session:
        stored = await session.get(Subscription, created["id"])
    assert stored is not None and stored.previous_secret_sealed is not None
    new_only = SecretBox([new_key])
    assert new_only.open(stored.secret_sealed, context=created["id"]) == rotated
    assert new_only.open(stored.previous_secret_sealed, context=created["id"]) == created["secret"]
