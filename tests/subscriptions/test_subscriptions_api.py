"""The subscriptions API (CONTRACT §4.2): CRUD, pagination, auth, workspace isolation, validation, test events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis

from subscriptions.keys import public_key_for
from subscriptions.matching import match_subscriptions
from subscriptions.models import SubscriptionFilter
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import Event, record_event
from synchook.queue import QUEUE_NAME
from synchook.timeutil import utcnow
from tests.factories import Tenant, add_key, make_tenant
from webhooks.models import Delivery

BASE = "/v1/webhooks/subscriptions"
URL = "https://receiver.example.com/hooks"


async def create(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    body = {"url": URL, "event_types": ["calendar.sync.*"], **fields}
    response = await client.post(BASE, json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


# --- create ----------------------------------------------------------------------------------------


async def test_create_returns_the_subscription_and_its_secret(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        BASE,
        json={
            "url": URL,
            "event_types": ["calendar.sync.completed", "calendar.sync.failed"],
            "description": "Production receiver",
            "providers": ["google"],
            "rate_limit_per_second": 50,
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["id"].startswith("sub_") and len(data["id"]) == 30
    assert data["url"] == URL
    assert data["event_types"] == ["calendar.sync.completed", "calendar.sync.failed"]
    assert data["providers"] == ["google"]
    assert data["description"] == "Production receiver"
    assert data["status"] == "enabled"
    assert data["signature_type"] == "hmac-sha256"
    assert data["rate_limit_per_second"] == 50
    assert data["secret"].startswith("whsec_")
    assert data["public_key"] is None
    assert data["created_at"].endswith("Z") and data["created_at"] == data["updated_at"]
    assert "x-ratelimit-limit" in response.headers


async def test_create_with_defaults(client: httpx.AsyncClient, tenant: Tenant) -> None:
    data = await create(client, tenant, event_types=["*"])
    assert data["providers"] is None
    assert data["description"] is None
    assert data["rate_limit_per_second"] is None


async def test_create_ed25519_gives_the_public_key_only(client: httpx.AsyncClient, tenant: Tenant) -> None:
    # A receiver needs only whpk_ to verify v1a; the private whsk_ key stays behind the secret endpoint.
    response = await client.post(
        BASE,
        json={"url": "https://receiver.example.com/hook", "event_types": ["*"], "signature_type": "ed25519"},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["signature_type"] == "ed25519"
    assert data["public_key"].startswith("whpk_")
    assert "secret" not in data
    assert "whsk_" not in response.text
    revealed = (await client.get(f"{BASE}/{data['id']}/secret", headers=tenant.headers)).json()["data"]
    assert revealed["secret"].startswith("whsk_")
    assert public_key_for(revealed["secret"]) == data["public_key"]


async def test_create_normalizes_the_url(client: httpx.AsyncClient, tenant: Tenant) -> None:
    data = await create(client, tenant, url="HTTPS://Receiver.Example.COM:443")
    assert data["url"] == "https://receiver.example.com/"


async def test_private_targets_are_accepted_when_allowed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    # The test settings allow private targets, as `synchook dev` does.
    data = await create(client, tenant, url="http://127.0.0.1:9000/hook")
    assert data["url"] == "http://127.0.0.1:9000/hook"


async def test_duplicate_patterns_and_providers_are_collapsed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    data = await create(client, tenant, event_types=["*", "*"], providers=["microsoft", "google", "google"])
    assert data["event_types"] == ["*"]
    assert data["providers"] == ["google", "microsoft"]


# --- read ------------------------------------------------------------------------------------------


async def test_get_one_never_shows_the_secret(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    response = await client.get(f"{BASE}/{created['id']}", headers=tenant.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert "secret" not in data
    assert created["secret"] not in response.text
    assert {k: v for k, v in created.items() if k not in ("secret", "previous_secret_expires_at")} | {
        "previous_public_key": None
    } == data | {"previous_public_key": None}


async def test_list_pages_newest_first(client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = [(await create(client, tenant))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get(BASE, params=params, headers=tenant.headers)
        assert response.status_code == 200
        body = response.json()
        assert all("secret" not in item for item in body["data"])
        seen += [item["id"] for item in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_default_page(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create(client, tenant)
    body = (await client.get(BASE, headers=tenant.headers)).json()
    assert len(body["data"]) == 1
    assert body["next_cursor"] is None


async def test_list_leaves_out_deleted_and_other_workspaces(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    await create(client, other)
    kept = await create(client, tenant)
    gone = await create(client, tenant)
    assert (await client.delete(f"{BASE}/{gone['id']}", headers=tenant.headers)).status_code == 204
    body = (await client.get(BASE, headers=tenant.headers)).json()
    assert [item["id"] for item in body["data"]] == [kept["id"]]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "%%%"}])
async def test_list_rejects_bad_paging(client: httpx.AsyncClient, tenant: Tenant, params: dict[str, str]) -> None:
    error = error_of(await client.get(BASE, params=params, headers=tenant.headers), 422, "validation_error")
    assert error["field"] in ("limit", "cursor")


# --- update ----------------------------------------------------------------------------------------


async def test_patch_changes_only_what_is_sent(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant, description="old", rate_limit_per_second=5)
    response = await client.patch(
        f"{BASE}/{created['id']}",
        json={"url": "https://other.example.com/in", "description": "new"},
        headers=tenant.headers,
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["url"] == "https://other.example.com/in"
    assert data["description"] == "new"
    assert data["rate_limit_per_second"] == 5
    assert data["event_types"] == created["event_types"]
    assert data["updated_at"] >= created["updated_at"]


async def test_patch_null_clears_optional_fields(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant, description="d", providers=["google"], rate_limit_per_second=3)
    response = await client.patch(
        f"{BASE}/{created['id']}",
        json={"description": None, "providers": None, "rate_limit_per_second": None},
        headers=tenant.headers,
    )
    data = response.json()["data"]
    assert (data["description"], data["providers"], data["rate_limit_per_second"]) == (None, None, None)


async def test_patch_status_disables_and_enables(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    url = f"{BASE}/{created['id']}"
    disabled = (await client.patch(url, json={"status": "disabled"}, headers=tenant.headers)).json()["data"]
    assert disabled["status"] == "disabled"
    assert disabled["disabled_reason"]
    enabled = (await client.patch(url, json={"status": "enabled"}, headers=tenant.headers)).json()["data"]
    assert enabled["status"] == "enabled"
    assert enabled["disabled_reason"] is None


async def test_patch_rewrites_filters(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    created = await create(client, tenant, event_types=["calendar.sync.completed"])
    response = await client.patch(
        f"{BASE}/{created['id']}",
        json={"event_types": ["calendar.sync.failed"], "providers": ["microsoft"]},
        headers=tenant.headers,
    )
    assert response.status_code == 200
    async with app_ctx.db.session() as session:
        rows = (
            await session.execute(
                sa.select(SubscriptionFilter.event_pattern, SubscriptionFilter.provider).where(  # type: ignore[call-overload]
                    SubscriptionFilter.subscription_id == created["id"]
                )
            )
        ).all()
        completed = await match_subscriptions(
            session, workspace_id=tenant.workspace_id, event_type="calendar.sync.completed", provider="microsoft"
        )
        failed = await match_subscriptions(
            session, workspace_id=tenant.workspace_id, event_type="calendar.sync.failed", provider="microsoft"
        )
    assert sorted(map(tuple, rows)) == [("calendar.sync.failed", "microsoft")]
    assert completed == []
    assert [s.id for s in failed] == [created["id"]]


async def test_patch_rechecks_the_url(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    response = await client.patch(
        f"{BASE}/{created['id']}", json={"url": "ftp://x.example.com/"}, headers=tenant.headers
    )
    error = error_of(response, 422, "invalid_url")
    assert error["field"] == "url"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": None}, "url"),
        ({"event_types": None}, "event_types"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["calendar.sync.done"]}, "event_types"),
        ({"status": "paused"}, "status"),
        ({"status": None}, "status"),
        ({"providers": ["yahoo"]}, "providers.0"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"description": "a\r\nb"}, "description"),
        ({"secret": "whsec_x"}, "secret"),
    ],
)
async def test_patch_rejects_bad_fields(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    created = await create(client, tenant)
    error = error_of(
        await client.patch(f"{BASE}/{created['id']}", json=body, headers=tenant.headers), 422, "validation_error"
    )
    assert error["field"] == field


# --- delete ----------------------------------------------------------------------------------------


async def _add_deliveries(ctx: AppContext, tenant: Tenant, subscription_id: str) -> dict[str, str]:
    """One delivery per status for the subscription; returns {status: delivery id}."""
    now = utcnow()
    ids: dict[str, str] = {}
    async with ctx.db.session() as session:
        event = record_event(session, workspace_id=tenant.workspace_id, type="calendar.sync.completed", data={})
        await session.flush()
        for status in ("pending", "failed", "succeeded", "dead"):
            ids[status] = new_id("dlv")
            session.add(
                Delivery(
                    id=ids[status],
                    workspace_id=tenant.workspace_id,
                    event_id=event.id,
                    event_type=event.type,
                    subscription_id=subscription_id,
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )
    return ids


async def test_delete_soft_deletes_and_cancels_open_deliveries(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    deliveries = await _add_deliveries(app_ctx, tenant, created["id"])
    response = await client.delete(f"{BASE}/{created['id']}", headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{BASE}/{created['id']}", headers=tenant.headers)).status_code == 404
    async with app_ctx.db.session() as session:
        deleted_at = (
            await session.execute(sa.text("SELECT deleted_at FROM subscriptions WHERE id = :id"), {"id": created["id"]})
        ).scalar_one()
        filters = (
            await session.execute(
                sa.text("SELECT count(*) FROM subscription_filters WHERE subscription_id = :id"), {"id": created["id"]}
            )
        ).scalar_one()
        rows = (
            await session.execute(
                sa.text("SELECT id, status, cancel_reason FROM deliveries WHERE subscription_id = :id"),
                {"id": created["id"]},
            )
        ).all()
    assert deleted_at is not None
    assert filters == 0
    by_id = {row[0]: (row[1], row[2]) for row in rows}
    assert by_id[deliveries["pending"]] == ("cancelled", "subscription deleted")
    assert by_id[deliveries["failed"]] == ("cancelled", "subscription deleted")
    assert by_id[deliveries["succeeded"]] == ("succeeded", None)
    assert by_id[deliveries["dead"]] == ("dead", None)


async def test_delete_cancels_open_deliveries_as_every_cancel_does(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    """Completed, nothing due, like a delivery cancelled at its claim or by auto-disable (one function of the
    delivery side does both); one in flight on a worker is left to its lease, cancelled at its next claim."""
    created = await create(client, tenant)
    deliveries = await _add_deliveries(app_ctx, tenant, created["id"])
    in_flight = deliveries["pending"]
    table = Delivery.__table__  # type: ignore[attr-defined]
    async with app_ctx.db.session() as session:
        await session.execute(
            sa.update(table).where(table.c.subscription_id == created["id"]).values(next_attempt_at=utcnow())
        )
        await session.execute(
            sa.update(table)
            .where(table.c.id == in_flight)
            .values(lease_until=utcnow() + timedelta(minutes=1), lease_owner="worker")
        )
    assert (await client.delete(f"{BASE}/{created['id']}", headers=tenant.headers)).status_code == 204
    async with app_ctx.db.session() as session:
        rows = (
            await session.execute(
                sa.select(table.c.id, table.c.status, table.c.next_attempt_at, table.c.completed_at).where(
                    table.c.subscription_id == created["id"]
                )
            )
        ).all()
    by_id = {row[0]: row[1:] for row in rows}
    status, next_attempt_at, completed_at = by_id[deliveries["failed"]]
    assert (status, next_attempt_at) == ("cancelled", None) and completed_at is not None
    assert by_id[in_flight][0] == "pending"


async def test_delete_twice_is_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant)
    assert (await client.delete(f"{BASE}/{created['id']}", headers=tenant.headers)).status_code == 204
    error_of(await client.delete(f"{BASE}/{created['id']}", headers=tenant.headers), 404, "not_found")


# --- test events -----------------------------------------------------------------------------------


async def test_test_event_is_recorded_for_that_subscription_alone(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, redis: ArqRedis
) -> None:
    target = await create(client, tenant, event_types=["calendar.sync.completed"])
    await create(client, tenant, event_types=["*"])
    response = await client.post(f"{BASE}/{target['id']}/test", headers=tenant.headers)
    assert response.status_code == 202
    event_id = response.json()["data"]["event_id"]
    assert event_id.startswith("evt_")
    async with app_ctx.db.session() as session:
        events = list((await session.execute(sa.select(Event))).scalars())
        matched = await match_subscriptions(
            session,
            workspace_id=tenant.workspace_id,
            event_type="webhook.test",
            provider=None,
            target_subscription_id=events[0].target_subscription_id,
        )
    assert len(events) == 1
    event = events[0]
    assert (event.id, event.type, event.target_subscription_id) == (event_id, "webhook.test", target["id"])
    assert event.workspace_id == tenant.workspace_id
    assert event.data["subscription_id"] == target["id"]
    assert [s.id for s in matched] == [target["id"]]
    assert await redis.zcard(QUEUE_NAME) == 1  # handed off to the relay


async def test_test_event_of_another_workspace_is_404(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant
) -> None:
    other = await make_tenant(app_ctx)
    created = await create(client, other)
    error_of(await client.post(f"{BASE}/{created['id']}/test", headers=tenant.headers), 404, "not_found")
    async with app_ctx.db.session() as session:
        assert (await session.execute(sa.text("SELECT count(*) FROM events"))).scalar_one() == 0


# --- auth and isolation ----------------------------------------------------------------------------

ONE_ROUTES = [
    ("GET", ""),
    ("PATCH", ""),
    ("DELETE", ""),
    ("GET", "/secret"),
    ("POST", "/secret/rotate"),
    ("POST", "/test"),
]
# GET /secret too: a read-only key never sees a signing secret.
WRITE_ROUTES = [("PATCH", ""), ("DELETE", ""), ("GET", "/secret"), ("POST", "/secret/rotate"), ("POST", "/test")]


def _json_for(method: str) -> dict[str, Any] | None:
    return {"description": "x"} if method == "PATCH" else ({} if method == "POST" else None)


@pytest.mark.parametrize(("method", "path"), [("GET", BASE), ("POST", BASE), ("GET", "/v1/webhooks/event-types")])
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer wbk_" + "x" * 40, "Basic abc"])
async def test_collection_routes_need_a_valid_key(
    client: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    error_of(
        await client.request(method, path, headers=headers, json={} if method == "POST" else None), 401, "invalid_key"
    )


@pytest.mark.parametrize(("method", "suffix"), ONE_ROUTES)
async def test_item_routes_need_a_key(client: httpx.AsyncClient, tenant: Tenant, method: str, suffix: str) -> None:
    created = await create(client, tenant)
    response = await client.request(method, f"{BASE}/{created['id']}{suffix}", json=_json_for(method))
    error_of(response, 401, "invalid_key")


async def test_revoked_key_is_401(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    from synchook.auth.service import revoke

    await revoke(app_ctx.db, app_ctx.redis, key_id=tenant.key_id)  # as `synchook keys revoke`: commit, announce
    error_of(await client.get(BASE, headers=tenant.headers), 401, "invalid_key")


@pytest.mark.parametrize(("method", "suffix"), WRITE_ROUTES)
async def test_read_only_key_cannot_write(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, method: str, suffix: str
) -> None:
    created = await create(client, tenant)
    reader = await add_key(app_ctx, tenant, scopes=["read:webhooks"])
    response = await client.request(
        method, f"{BASE}/{created['id']}{suffix}", json=_json_for(method), headers=reader.headers
    )
    error_of(response, 403, "insufficient_permissions")


async def test_read_only_key_cannot_create(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    reader = await add_key(app_ctx, tenant, scopes=["read:webhooks"])
    response = await client.post(BASE, json={"url": URL, "event_types": ["*"]}, headers=reader.headers)
    error_of(response, 403, "insufficient_permissions")


async def test_read_only_key_can_read(client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant) -> None:
    created = await create(client, tenant)
    reader = await add_key(app_ctx, tenant, scopes=["read:webhooks"])
    assert (await client.get(BASE, headers=reader.headers)).status_code == 200
    assert (await client.get(f"{BASE}/{created['id']}", headers=reader.headers)).status_code == 200
    assert (await client.get("/v1/webhooks/event-types", headers=reader.headers)).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("GET", BASE), ("GET", "/v1/webhooks/event-types"), ("GET", "item")])
async def test_reads_need_read_scope(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, method: str, path: str
) -> None:
    created = await create(client, tenant)
    calendar_only = await add_key(app_ctx, tenant, scopes=["read:calendar", "write:calendar"])
    target = f"{BASE}/{created['id']}" if path == "item" else path
    error_of(await client.request(method, target, headers=calendar_only.headers), 403, "insufficient_permissions")


@pytest.mark.parametrize(("method", "suffix"), ONE_ROUTES)
async def test_another_workspaces_subscription_is_404(
    client: httpx.AsyncClient, app_ctx: AppContext, tenant: Tenant, method: str, suffix: str
) -> None:
    other = await make_tenant(app_ctx)
    theirs = await create(client, other)
    response = await client.request(
        method, f"{BASE}/{theirs['id']}{suffix}", json=_json_for(method), headers=tenant.headers
    )
    error_of(response, 404, "not_found")
    # ... and it is untouched.
    still = await client.get(f"{BASE}/{theirs['id']}", headers=other.headers)
    assert still.status_code == 200
    assert still.json()["data"]["description"] is None


@pytest.mark.parametrize("bad_id", ["sub_nope", "sub_" + "0" * 26, "../etc", "x" * 300])
@pytest.mark.parametrize(("method", "suffix"), ONE_ROUTES)
async def test_unknown_ids_are_404(
    client: httpx.AsyncClient, tenant: Tenant, method: str, suffix: str, bad_id: str
) -> None:
    response = await client.request(method, f"{BASE}/{bad_id}{suffix}", json=_json_for(method), headers=tenant.headers)
    error_of(response, 404, "not_found")


# --- create validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": ["*"]}, "url"),
        ({"url": URL}, "event_types"),
        ({"url": URL, "event_types": []}, "event_types"),
        ({"url": URL, "event_types": "calendar.sync.*"}, "event_types"),
        ({"url": URL, "event_types": ["calendar.sync.started", "calendar.sync.done"]}, "event_types"),
        ({"url": URL, "event_types": ["calendar.sync"]}, "event_types"),
        ({"url": URL, "event_types": ["calendar.sync.com*"]}, "event_types"),
        ({"url": URL, "event_types": ["billing.*"]}, "event_types"),
        ({"url": URL, "event_types": [7]}, "event_types.0"),
        ({"url": URL, "event_types": ["*"], "providers": ["yahoo"]}, "providers.0"),
        ({"url": URL, "event_types": ["*"], "providers": []}, "providers"),
        ({"url": URL, "event_types": ["*"], "rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"url": URL, "event_types": ["*"], "rate_limit_per_second": -1}, "rate_limit_per_second"),
        ({"url": URL, "event_types": ["*"], "rate_limit_per_second": 1.5}, "rate_limit_per_second"),
        ({"url": URL, "event_types": ["*"], "rate_limit_per_second": "10"}, "rate_limit_per_second"),
        ({"url": URL, "event_types": ["*"], "rate_limit_per_second": True}, "rate_limit_per_second"),
        ({"url": URL, "event_types": ["*"], "description": "x" * 1001}, "description"),
        ({"url": URL, "event_types": ["*"], "description": "line\nbreak"}, "description"),
        ({"url": URL, "event_types": ["*"], "description": "carriage\rreturn"}, "description"),
        ({"url": URL, "event_types": ["*"], "signature_type": "rsa"}, "signature_type"),
        ({"url": URL, "event_types": ["*"], "status": "enabled"}, "status"),
        ({"url": 5, "event_types": ["*"]}, "url"),
    ],
)
async def test_create_rejects_bad_fields(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    error = error_of(await client.post(BASE, json=body, headers=tenant.headers), 422, "validation_error")
    assert error["field"] == field
    assert error["message"].startswith(field)


async def test_unknown_event_type_message_points_at_the_catalogue(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(BASE, json={"url": URL, "event_types": ["calendar.sync.done"]}, headers=tenant.headers)
    message = error_of(response, 422, "validation_error")["message"]
    assert "calendar.sync.done" in message and "/v1/webhooks/event-types" in message


async def test_description_of_1000_chars_is_fine(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await create(client, tenant, description="é" * 1000))["description"] == "é" * 1000


@pytest.mark.parametrize("raw", [b"{", b"[]", b"", b'{"url": NaN}', b"\xff\xfe"])
async def test_create_rejects_bad_json(client: httpx.AsyncClient, tenant: Tenant, raw: bytes) -> None:
    response = await client.post(BASE, content=raw, headers={**tenant.headers, "content-type": "application/json"})
    assert error_of(response, 422, "validation_error")["field"] == "body"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "//example.com/x", "https://", "https://a b.com/"])
async def test_create_rejects_invalid_urls(client: httpx.AsyncClient, tenant: Tenant, url: str) -> None:
    error = error_of(
        await client.post(BASE, json={"url": url, "event_types": ["*"]}, headers=tenant.headers), 422, "invalid_url"
    )
    assert error["field"] == "url"


async def test_create_rejects_too_long_urls(client: httpx.AsyncClient, tenant: Tenant) -> None:
    url = "https://example.com/" + "a" * 2100
    error = error_of(
        await client.post(BASE, json={"url": url, "event_types": ["*"]}, headers=tenant.headers), 422, "invalid_url"
    )
    assert "2048" in error["message"]


# --- event types -----------------------------------------------------------------------------------


async def test_event_types_lists_the_catalogue(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/v1/webhooks/event-types", headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    names = [item["name"] for item in body["data"]]
    assert names == [
        "calendar.sync.queued",
        "calendar.sync.started",
        "calendar.sync.completed",
        "calendar.sync.failed",
        "calendar.event.created",
        "calendar.event.updated",
        "calendar.event.deleted",
        "webhook.test",
        "webhook.subscription.disabled",
    ]
    for item in body["data"]:
        assert item["description"]
        assert item["schema"]["properties"]["type"] == {"const": item["name"]}
