"""Subscription secrets: shown only where they should be, rotated with an overlap, sealed at rest, never logged."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from subscriptions.keys import public_key_for
from subscriptions.matching import signing_secrets
from subscriptions.models import Subscription
from subscriptions.service import reseal_subscription_secrets
from synchook.context import AppContext
from synchook.crypto import DecryptionError, SecretBox, generate_master_key
from synchook.reseal import ResealCount
from synchook.settings import parse_secret_keys
from synchook.timeutil import parse_datetime, utcnow
from tests.factories import Tenant, add_key, make_tenant

BASE = "/v1/webhooks/subscriptions"


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def create(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"url": "https://receiver.example.com/hooks", "event_types": ["*"], **fields}
    response = await client.post(BASE, json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    if "secret" not in data:  # ed25519: the create response gives only the public key; the secret endpoint has whsk_
        shown = await client.get(f"{BASE}/{data['id']}/secret", headers=tenant.headers)
        data["secret"] = shown.json()["data"]["secret"]
    return data


async def rotate(client: httpx.AsyncClient, tenant: Tenant, sub_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{BASE}/{sub_id}/secret/rotate", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def load(ctx: AppContext, sub_id: str) -> Subscription:
    async with ctx.db.session() as session:
        subscription = await session.get(Subscription, sub_id)
    assert subscription is not None
    return subscription


async def test_secret_endpoint_shows_the_creation_secret(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    response = await client.get(f"{BASE}/{created['id']}/secret", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "secret": created["secret"],
        "public_key": None,
        "previous_secret_expires_at": None,
        "previous_public_key": None,
    }


async def test_a_read_only_key_never_sees_a_secret(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    reader = await add_key(app_ctx, tenant, scopes=["read:webhooks"])
    response = await client.get(f"{BASE}/{created['id']}/secret", headers=reader.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert created["secret"] not in response.text
    writer = await add_key(app_ctx, tenant, scopes=["write:webhooks"])
    allowed = await client.get(f"{BASE}/{created['id']}/secret", headers=writer.headers)
    assert allowed.json()["data"]["secret"] == created["secret"]


async def test_responses_holding_a_secret_are_never_cached(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"url": "https://receiver.example.com/hooks", "event_types": ["*"]}
    created = await client.post(BASE, json=body, headers=tenant.headers)
    sub_id = created.json()["data"]["id"]
    shown = await client.get(f"{BASE}/{sub_id}/secret", headers=tenant.headers)
    rotated = await client.post(f"{BASE}/{sub_id}/secret/rotate", json={}, headers=tenant.headers)
    for response in (created, shown, rotated):
        assert response.status_code in (200, 201), response.text
        assert response.headers["cache-control"] == "no-store"
    listed = await client.get(f"{BASE}/{sub_id}", headers=tenant.headers)
    assert "secret" not in listed.json()["data"]


async def test_secret_endpoint_gives_the_public_key_for_ed25519(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant, signature_type="ed25519")
    data = (await client.get(f"{BASE}/{created['id']}/secret", headers=tenant.headers)).json()["data"]
    assert data["secret"] == created["secret"]
    assert data["public_key"] == created["public_key"] == public_key_for(created["secret"])


async def test_secrets_are_distinct_per_subscription(client: httpx.AsyncClient, tenant: Tenant) -> None:
    secrets = {(await create(client, tenant))["secret"] for _ in range(3)}
    assert len(secrets) == 3


async def test_rotation_keeps_the_previous_secret_for_a_day_by_default(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    before = utcnow()
    rotated = await rotate(client, tenant, created["id"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    expires = parse_datetime(rotated["previous_secret_expires_at"])
    assert before + timedelta(seconds=86_390) < expires < utcnow() + timedelta(seconds=86_410)
    shown = (await client.get(f"{BASE}/{created['id']}/secret", headers=tenant.headers)).json()["data"]
    assert shown["secret"] == rotated["secret"]
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]

    subscription = await load(app_ctx, created["id"])
    assert signing_secrets(subscription, app_ctx.box, now=utcnow()) == ([rotated["secret"], created["secret"]], [])
    after = expires + timedelta(seconds=1)
    assert signing_secrets(subscription, app_ctx.box, now=after) == ([rotated["secret"]], [])


async def test_rotation_with_a_short_overlap_expires_the_old_secret(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    rotated = await rotate(client, tenant, created["id"], expire_previous_in=60)
    subscription = await load(app_ctx, created["id"])
    now = utcnow()
    assert signing_secrets(subscription, app_ctx.box, now=now) == ([rotated["secret"], created["secret"]], [])
    assert signing_secrets(subscription, app_ctx.box, now=now + timedelta(seconds=61)) == ([rotated["secret"]], [])


async def test_rotation_with_zero_overlap_drops_the_old_secret_at_once(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    rotated = await rotate(client, tenant, created["id"], expire_previous_in=0)
    assert rotated["previous_secret_expires_at"] is None
    subscription = await load(app_ctx, created["id"])
    assert subscription.previous_secret_sealed is None
    assert signing_secrets(subscription, app_ctx.box, now=utcnow()) == ([rotated["secret"]], [])


async def test_rotating_again_replaces_the_previous_secret(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    first = await rotate(client, tenant, created["id"])
    second = await rotate(client, tenant, created["id"])
    subscription = await load(app_ctx, created["id"])
    assert signing_secrets(subscription, app_ctx.box, now=utcnow()) == ([second["secret"], first["secret"]], [])


async def test_rotation_without_a_body_uses_the_default(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    response = await client.post(f"{BASE}/{created['id']}/secret/rotate", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["data"]["previous_secret_expires_at"] is not None


async def test_ed25519_rotation_overlaps_both_keys(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant, signature_type="ed25519")
    rotated = await rotate(client, tenant, created["id"])
    assert rotated["secret"].startswith("whsk_") and rotated["secret"] != created["secret"]
    assert rotated["public_key"] == public_key_for(rotated["secret"]) != created["public_key"]
    assert rotated["previous_public_key"] == created["public_key"]
    shown = (await client.get(f"{BASE}/{created['id']}", headers=tenant.headers)).json()["data"]
    assert shown["public_key"] == rotated["public_key"]
    subscription = await load(app_ctx, created["id"])
    assert signing_secrets(subscription, app_ctx.box, now=utcnow()) == ([], [rotated["secret"], created["secret"]])


@pytest.mark.parametrize("value", [-1, 30 * 86_400 + 1, "60", 1.5, None])
async def test_rotation_rejects_bad_overlaps(client: httpx.AsyncClient, tenant: Tenant, value: Any) -> None:
    created = await create(client, tenant)
    response = await client.post(
        f"{BASE}/{created['id']}/secret/rotate", json={"expire_previous_in": value}, headers=tenant.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "expire_previous_in"


async def test_secrets_are_encrypted_in_the_database(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    hmac_sub = await create(client, tenant)
    rotated = await rotate(client, tenant, hmac_sub["id"])
    ed_sub = await create(client, tenant, signature_type="ed25519")
    ed_rotated = await rotate(client, tenant, ed_sub["id"])
    plaintexts = [hmac_sub["secret"], rotated["secret"], ed_sub["secret"], ed_rotated["secret"]]
    async with app_ctx.db.session() as session:
        rows = (await session.execute(sa.text("SELECT * FROM subscriptions"))).all()
        filters = (await session.execute(sa.text("SELECT * FROM subscription_filters"))).all()
    dump = repr(rows) + repr(filters)
    assert len(rows) == 2
    assert "whsec_" not in dump and "whsk_" not in dump
    for secret in plaintexts:
        body = secret.split("_", 1)[1]
        assert body not in dump
    sealed = {row._mapping["id"]: row._mapping["secret_sealed"] for row in rows}
    assert all(value.startswith("v1:") for value in sealed.values())


async def test_sealed_secrets_are_bound_to_their_subscription(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    first = await create(client, tenant)
    second = await create(client, tenant)
    sealed = (await load(app_ctx, first["id"])).secret_sealed
    assert app_ctx.box.open(sealed, context=first["id"]) == first["secret"]
    with pytest.raises(DecryptionError):
        app_ctx.box.open(sealed, context=second["id"])  # a copied ciphertext does not open for another row


async def test_reseal_moves_every_secret_to_the_newest_key(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = [await create(client, tenant) for _ in range(3)]
    rotated = await rotate(client, tenant, created[0]["id"])
    old_key = app_ctx.settings.secret_keys()[0]
    newer = SecretBox([parse_secret_keys(generate_master_key())[0], old_key])
    assert await reseal_subscription_secrets(app_ctx.db, newer) == ResealCount(changed=3)
    assert await reseal_subscription_secrets(app_ctx.db, newer) == ResealCount()
    only_new = SecretBox([parse_secret_keys(generate_master_key())[0]])
    for item in created:
        subscription = await load(app_ctx, item["id"])
        assert not newer.needs_reseal(subscription.secret_sealed)
        with pytest.raises(DecryptionError):
            only_new.open(subscription.secret_sealed, context=item["id"])
    first = await load(app_ctx, created[0]["id"])
    assert signing_secrets(first, newer, now=utcnow()) == ([rotated["secret"], created[0]["secret"]], [])


async def test_no_secret_reaches_any_log_line(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for signature_type in ("hmac-sha256", "ed25519"):
        created = await create(client, tenant, signature_type=signature_type)
        seen.append(created["secret"])
        seen.append(
            (await client.get(f"{BASE}/{created['id']}/secret", headers=tenant.headers)).json()["data"]["secret"]
        )
        seen.append((await rotate(client, tenant, created["id"]))["secret"])
        assert (await client.post(f"{BASE}/{created['id']}/test", headers=tenant.headers)).status_code == 202
        assert (await client.get(f"{BASE}/{created['id']}", headers=tenant.headers)).status_code == 200
        patched = await client.patch(f"{BASE}/{created['id']}", json={"status": "disabled"}, headers=tenant.headers)
        assert patched.status_code == 200
        assert (await client.delete(f"{BASE}/{created['id']}", headers=tenant.headers)).status_code == 204
    assert caplog.records, "expected the API and services to log something at DEBUG"
    everything = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    for secret in seen:
        assert secret not in everything
        assert secret.split("_", 1)[1] not in everything
