"""Bad input to POST /v1/calendar/sync gets the contract's error, never a 500, and writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from sync_trigger.models import SyncJob
from synchook.auth.service import revoke
from synchook.context import AppContext
from synchook.idempotency import IdempotencyRecord
from synchook.outbox import Event
from tests.factories import Tenant, make_tenant


@pytest.fixture
async def tenant(app_ctx: AppContext, client: httpx.AsyncClient) -> Tenant:
    made = await make_tenant(app_ctx)
    response = await client.post(
        "/v1/calendar/connections",
        headers=made.headers,
        json={"provider": "google", "account": "a@example.com", "access_token": "at", "refresh_token": "rt"},
    )
    assert response.status_code == 201
    return made


async def nothing_written(ctx: AppContext) -> None:
    async with ctx.db.session() as session:
        for model in (SyncJob, Event, IdempotencyRecord):
            assert (await session.execute(select(func.count()).select_from(model))).scalar_one() == 0, model


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert error["field"] == field


@pytest.mark.parametrize(
    "raw",
    [
        b'{"mode": ',
        b"{'mode': 'full'}",
        b'{"mode": "full",}',
        b"[1, 2]",
        b'"full"',
        b"null",
        b"42",
        b'{"mode": NaN}',
        b'{"a": ' * 100 + b"1" + b"}" * 100,
        b'{"mode": "\xff\xfe"}',
    ],
    ids=["truncated", "single-quotes", "trailing-comma", "array", "string", "null", "number", "nan", "deep", "utf8"],
)
async def test_malformed_json_is_422_body(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, raw: bytes
) -> None:
    response = await client.post(
        "/v1/calendar/sync", headers={**tenant.headers, "Content-Type": "application/json"}, content=raw
    )
    assert_error(response, 422, "validation_error", "body")
    await nothing_written(app_ctx)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"mode": "everything"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"mode": None}, "mode"),
        ({"mode": ["full"]}, "mode"),
        ({"provider": "yahoo"}, "provider"),
        ({"provider": True}, "provider"),
        ({"provider": "GOOGLE"}, "provider"),
        ({"mode": "full", "from_date": 1767225600}, "from_date"),
        ({"mode": "full", "from_date": "2026-13-45"}, "from_date"),
        ({"mode": "full", "from_date": "yesterday"}, "from_date"),
        ({"mode": "full", "from_date": ""}, "from_date"),
        ({"mode": "full", "to_date": "9999-12-31T23:59:59-23:59"}, "to_date"),
        ({"mode": "full", "to_date": "2026-01-01T00:00:00Z" + " " * 100}, "to_date"),
        ({"mode": "full", "from_date": "2027-01-01", "to_date": "2026-01-01"}, "from_date"),
        ({"from_date": "2026-01-01"}, "from_date"),
        ({"mode": "incremental", "to_date": "2026-01-01"}, "to_date"),
        ({"modes": "full"}, "modes"),
        ({"mode": "full", "workspace_id": "ws_x"}, "workspace_id"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, payload: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=payload)
    assert_error(response, 422, "validation_error", field)
    await nothing_written(app_ctx)


async def test_huge_body_with_content_length_is_413(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    huge = b'{"mode": "full", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await client.post(
        "/v1/calendar/sync", headers={**tenant.headers, "Content-Type": "application/json"}, content=huge
    )
    assert_error(response, 413, "payload_too_large")
    await nothing_written(app_ctx)


async def test_huge_chunked_body_is_413(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/v1/calendar/sync", headers={**tenant.headers, "Content-Type": "application/json"}, content=chunks()
    )
    assert_error(response, 413, "payload_too_large")
    await nothing_written(app_ctx)


@pytest.mark.parametrize("key", ["not-a-uuid", "", "1234", "g" * 36, "x" * 5000])
async def test_bad_idempotency_key_is_422(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, key: str
) -> None:
    response = await client.post("/v1/calendar/sync", headers={**tenant.headers, "Idempotency-Key": key})
    assert_error(response, 422, "validation_error", "Idempotency-Key")
    await nothing_written(app_ctx)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer notwbk",
        "Bearer wbk_short",
        "Bearer wbk_" + "A" * 43,
        "Bearer " + "wbk_" + "A" * 5000,
        "Token wbk_" + "A" * 43,
    ],
)
async def test_bad_authorization_is_401(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.post("/v1/calendar/sync", headers=headers, json={"mode": "full"})
    assert_error(response, 401, "invalid_key")
    assert "x-ratelimit-limit" not in response.headers
    await nothing_written(app_ctx)


async def test_revoked_key_is_401(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    await revoke(app_ctx.db, app_ctx.redis, key_id=tenant.key_id)  # as `synchook keys revoke`: commit, announce
    assert_error(await client.post("/v1/calendar/sync", headers=tenant.headers), 401, "invalid_key")
    await nothing_written(app_ctx)


async def test_expired_key_is_401(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    expired = await make_tenant(app_ctx, expires_in=timedelta(seconds=-1))
    assert_error(await client.post("/v1/calendar/sync", headers=expired.headers), 401, "invalid_key")
    await nothing_written(app_ctx)


async def test_401_comes_before_body_validation(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/calendar/sync",
        headers={"Content-Type": "application/json", "Idempotency-Key": "nope"},
        content=b"{not json",
    )
    assert_error(response, 401, "invalid_key")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: httpx.AsyncClient, tenant: Tenant, method: str) -> None:
    response = await client.request(method, "/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("field", ["from_date", "to_date"])
@pytest.mark.parametrize("value", ["2026-12-01T09:00:00", "2026-12-01T09:00", "2026-12-01 09:00:00.123"])
async def test_a_date_time_without_a_time_zone_is_422_not_utc(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, field: str, value: str
) -> None:
    # Taking it as UTC silently shifted a caller's window by their own offset.
    other = {"from_date": "2026-11-01T00:00:00Z", "to_date": "2027-01-01T00:00:00+01:00"}
    payload = {"mode": "full", **other, field: value}
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=payload)
    assert_error(response, 422, "validation_error", field)
    assert response.json()["error"]["message"].startswith(f"{field}: date-time has no time zone: add Z")
    await nothing_written(app_ctx)


async def test_dates_and_zoned_date_times_are_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/calendar/sync",
        headers=tenant.headers,
        json={"mode": "full", "from_date": "2026-11-01", "to_date": "2026-12-01T09:00:00+01:00"},
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "payload",
    [
        {"mode": "full", "from_date": "yesterday"},
        {"mode": "full", "from_date": "2027-01-01", "to_date": "2026-01-01"},
        {"from_date": "2026-01-01"},
        {"mode": "full", "from_date": "2026-12-01T09:00:00"},
    ],
)
async def test_messages_never_carry_pydantics_prefix(
    client: httpx.AsyncClient, tenant: Tenant, payload: dict[str, Any]
) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=payload)
    assert response.status_code == 422
    assert "Value error" not in response.json()["error"]["message"]


async def test_a_missing_authorization_header_says_so(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/calendar/sync", json={"mode": "full"})
    assert_error(response, 401, "invalid_key")
    assert response.json()["error"]["message"] == "missing Authorization header: send Authorization: Bearer wbk_…"


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "wbk_" + "A" * 43, "Bearer sk_live_nope"])
async def test_a_malformed_authorization_header_says_how_to_send_it(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.post("/v1/calendar/sync", headers={"Authorization": authorization})
    assert_error(response, 401, "invalid_key")
    assert response.json()["error"]["message"] == "malformed Authorization header: send Authorization: Bearer wbk_…"
    assert authorization not in response.text
