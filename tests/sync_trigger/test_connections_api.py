"""Calendar connections: create, list (cursor pages, newest first), read, delete; tokens sealed and never returned."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sync_trigger.models import Connection
from sync_trigger.service import reseal_connection_tokens
from synchook.context import AppContext
from synchook.crypto import SecretBox, generate_master_key
from synchook.reseal import ResealCount
from synchook.settings import parse_secret_keys
from tests.factories import Tenant, add_key, make_tenant

ACCESS = "ya29.access-token-value"
REFRESH = "1//refresh-token-value"


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "provider": "google",
        "account": "alice@example.com",
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        **overrides,
    }


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def stored(ctx: AppContext, connection_id: str) -> Connection:
    async with ctx.db.session() as session:
        connection = await session.get(Connection, connection_id)
        assert connection is not None
        return connection


async def test_create_returns_201_without_tokens(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/calendar/connections", headers=tenant.headers, json=body(expires_at="2030-01-01T00:00:00Z")
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["id"].startswith("conn_")
    assert data["provider"] == "google"
    assert data["account"] == "alice@example.com"
    assert data["status"] == "active"
    assert data["created_at"].endswith("Z")
    assert ACCESS not in response.text and REFRESH not in response.text
    assert not {"access_token", "refresh_token"} & set(data)


async def test_tokens_are_sealed_at_rest_bound_to_the_connection(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection_id = (await client.post("/v1/calendar/connections", headers=tenant.headers, json=body())).json()["data"][
        "id"
    ]
    row = await stored(app_ctx, connection_id)
    assert ACCESS not in row.access_token_sealed and REFRESH not in row.refresh_token_sealed
    assert app_ctx.box.open(row.access_token_sealed, context=connection_id) == ACCESS
    assert app_ctx.box.open(row.refresh_token_sealed, context=connection_id) == REFRESH
    assert ACCESS not in repr(row)


async def test_get_list_and_delete(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    ids = []
    for i in range(3):
        created = await client.post(
            "/v1/calendar/connections", headers=tenant.headers, json=body(account=f"u{i}@example.com")
        )
        ids.append(created.json()["data"]["id"])
    one = await client.get(f"/v1/calendar/connections/{ids[0]}", headers=tenant.headers)
    assert one.status_code == 200
    assert one.json()["data"]["account"] == "u0@example.com"

    first = await client.get("/v1/calendar/connections?limit=2", headers=tenant.headers)
    assert [c["id"] for c in first.json()["data"]] == [ids[2], ids[1]]
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await client.get(f"/v1/calendar/connections?limit=2&cursor={cursor}", headers=tenant.headers)
    assert [c["id"] for c in second.json()["data"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    assert ACCESS not in first.text + second.text + one.text

    deleted = await client.delete(f"/v1/calendar/connections/{ids[1]}", headers=tenant.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/v1/calendar/connections/{ids[1]}", headers=tenant.headers)).status_code == 404
    assert (await client.delete(f"/v1/calendar/connections/{ids[1]}", headers=tenant.headers)).status_code == 404
    listed = await client.get("/v1/calendar/connections", headers=tenant.headers)
    assert [c["id"] for c in listed.json()["data"]] == [ids[2], ids[0]]


async def test_other_workspaces_see_404_and_an_empty_list(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection_id = (await client.post("/v1/calendar/connections", headers=tenant.headers, json=body())).json()["data"][
        "id"
    ]
    stranger = await make_tenant(app_ctx)
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/v1/calendar/connections/{connection_id}", headers=stranger.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    listed = await client.get("/v1/calendar/connections", headers=stranger.headers)
    assert listed.json() == {"data": [], "next_cursor": None}
    await stored(app_ctx, connection_id)  # still there


async def test_malformed_ids_are_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for bad in ("conn_x", "sub_01HYVTB5QK8ZA1QH82R7Q9N2PD", "%00", "x" * 300):
        assert (await client.get(f"/v1/calendar/connections/{bad}", headers=tenant.headers)).status_code == 404


async def test_the_same_account_twice_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await client.post("/v1/calendar/connections", headers=tenant.headers, json=body())).status_code == 201
    again = await client.post("/v1/calendar/connections", headers=tenant.headers, json=body())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "connection_exists"
    other = await client.post("/v1/calendar/connections", headers=tenant.headers, json=body(provider="microsoft"))
    assert other.status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(provider="yahoo"), "provider"),
        (body(account=""), "account"),
        (body(access_token=123), "access_token"),
        ({k: v for k, v in body().items() if k != "refresh_token"}, "refresh_token"),
        (body(expires_at="tomorrow"), "expires_at"),
        (body(extra="x"), "extra"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, payload: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/calendar/connections", headers=tenant.headers, json=payload)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == field
    async with app_ctx.db.session() as session:
        assert (await session.execute(select(Connection))).first() is None


async def test_scopes(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    reader = await add_key(app_ctx, tenant, scopes=["read:calendar"])
    writer = await add_key(app_ctx, tenant, scopes=["write:calendar"])
    assert (await client.post("/v1/calendar/connections", headers=reader.headers, json=body())).status_code == 403
    created = await client.post("/v1/calendar/connections", headers=writer.headers, json=body())
    assert created.status_code == 201
    connection_id = created.json()["data"]["id"]
    assert (await client.get("/v1/calendar/connections", headers=writer.headers)).status_code == 403
    assert (await client.get("/v1/calendar/connections", headers=reader.headers)).status_code == 200
    assert (await client.delete(f"/v1/calendar/connections/{connection_id}", headers=reader.headers)).status_code == 403
    assert (await client.post("/v1/calendar/connections", json=body())).status_code == 401


async def test_reseal_moves_tokens_to_the_newest_key(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection_id = (await client.post("/v1/calendar/connections", headers=tenant.headers, json=body())).json()["data"][
        "id"
    ]
    new_key = parse_secret_keys(generate_master_key())[0]
    rotated = SecretBox([new_key, *app_ctx.settings.secret_keys()])
    assert await reseal_connection_tokens(app_ctx.db, rotated) == ResealCount(changed=1)
    assert await reseal_connection_tokens(app_ctx.db, rotated) == ResealCount()
    row = await stored(app_ctx, connection_id)
    new_only = SecretBox([new_key])
    assert new_only.open(row.access_token_sealed, context=connection_id) == ACCESS
    assert new_only.open(row.refresh_token_sealed, context=connection_id) == REFRESH


def caldav_body(**overrides: Any) -> dict[str, Any]:
    # A public literal address: the URL-safety check passes it without a DNS lookup.
    return {
        "provider": "caldav",
        "account": "alice@icloud.example",
        "server_url": "https://93.184.216.34/dav",
        "username": "alice@icloud.example",
        "password": "abcd-efgh-ijkl-mnop",
        **overrides,
    }


async def test_caldav_connection_seals_the_password_and_never_returns_it(
    client: httpx.AsyncClient, tenant: Tenant, app_ctx: AppContext
) -> None:
    response = await client.post("/v1/calendar/connections", headers=tenant.headers, json=caldav_body())

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["provider"] == "caldav" and data["account"] == "alice@icloud.example"
    assert "abcd-efgh-ijkl-mnop" not in response.text and not {"password", "username", "server_url"} & set(data)
    row = await stored(app_ctx, data["id"])
    assert (row.server_url, row.username) == ("https://93.184.216.34/dav", "alice@icloud.example")
    assert "abcd-efgh" not in row.access_token_sealed
    assert app_ctx.box.open(row.access_token_sealed, context=row.id) == "abcd-efgh-ijkl-mnop"
    listed = await client.get(f"/v1/calendar/connections/{data['id']}", headers=tenant.headers)
    assert "abcd-efgh-ijkl-mnop" not in listed.text


@pytest.mark.parametrize("settings_overrides", [{"allow_private_targets": False}])
@pytest.mark.parametrize(
    ("server_url", "reason"),
    [
        ("http://127.0.0.1:5232/", "https"),  # plain http and loopback: refused unless private targets are allowed
        ("https://10.0.0.7/dav", "private"),
        ("https://localhost/dav", "local"),
        ("ftp://caldav.example.com/", "http"),
    ],
)
async def test_caldav_server_url_goes_through_the_url_safety_check(
    client: httpx.AsyncClient, tenant: Tenant, server_url: str, reason: str
) -> None:
    response = await client.post(
        "/v1/calendar/connections", headers=tenant.headers, json=caldav_body(server_url=server_url)
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_url" and error["message"].startswith("server_url:")
    assert reason in error["message"]


async def test_caldav_private_server_url_is_allowed_when_private_targets_are(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # The test settings allow private targets (SYNCHOOK_ALLOW_PRIVATE_TARGETS=true), as a self-hosted Radicale needs.
    response = await client.post(
        "/v1/calendar/connections", headers=tenant.headers, json=caldav_body(server_url="http://127.0.0.1:5232/")
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password": "pw\r\nX-Evil: 1"}, "password"),
        ({"password": "é" * 2049}, "password"),  # 4098 bytes: bounded in bytes like tokens
        ({"username": "al:ice"}, "username"),
        ({"access_token": "t"}, "access_token"),  # OAuth fields are not CalDAV fields
        ({"server_url": None}, "server_url"),
        ({"provider": "icloud"}, "provider"),
    ],
)
async def test_caldav_body_is_validated_per_provider(
    client: httpx.AsyncClient, tenant: Tenant, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/calendar/connections", headers=tenant.headers, json=caldav_body(**overrides))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["message"].startswith(f"{field}:")
