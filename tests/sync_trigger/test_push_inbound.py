"""The provider push endpoints (CONTRACT §7), over real HTTP with real rows and Redis: what a genuine notification
schedules, and that forged ones (unknown channel, wrong secret, malformed, oversized, missing headers) schedule
nothing, never answer 500, and run out of budget per source address."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis
from sqlalchemy import select

from sync_trigger.models import SyncJob
from sync_trigger.push import inbound
from sync_trigger.push.debounce import wanted_key
from synchook.context import AppContext
from synchook.crypto import generate_master_key
from synchook.queue import QUEUE_NAME
from synchook.root.app import create_app
from synchook.settings import Settings
from tests.conftest import serve
from tests.factories import make_tenant
from tests.factories.push import Channel, make_indexed_calendars, make_push_channel

GOOGLE = "/v1/providers/google/notifications"
GRAPH = "/v1/providers/microsoft/notifications"
LIFECYCLE = "/v1/providers/microsoft/lifecycle"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A long window: nothing runs (no worker here), so what was scheduled stays visible in Redis.
    return {"push_debounce": 30.0}


@pytest.fixture
async def google(app_ctx: AppContext) -> Channel:
    tenant = await make_tenant(app_ctx)
    [calendar] = await make_indexed_calendars(app_ctx, tenant.workspace_id, "google")
    return await make_push_channel(app_ctx, calendar)


@pytest.fixture
async def graph(app_ctx: AppContext) -> list[Channel]:
    tenant = await make_tenant(app_ctx)
    calendars = await make_indexed_calendars(app_ctx, tenant.workspace_id, "microsoft", count=3)
    return [await make_push_channel(app_ctx, c) for c in calendars]


def google_headers(channel: Channel, *, state: str = "exists", token: str | None = None) -> dict[str, str]:
    return {
        "X-Goog-Channel-ID": channel.channel_id,
        "X-Goog-Channel-Token": channel.secret if token is None else token,
        "X-Goog-Channel-Expiration": "Sat, 12 Dec 2026 09:00:00 GMT",
        "X-Goog-Resource-ID": "res-1",
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
        "X-Goog-Resource-State": state,
        "X-Goog-Message-Number": "7",
    }


def graph_item(channel: Channel, *, client_state: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "subscriptionId": channel.channel_id,
        "subscriptionExpirationDateTime": "2026-12-07T11:00:00.000Z",
        "changeType": "updated",
        "resource": "Users/6a8b/Events/AAMkADNVxRAAA=",
        "clientState": channel.secret if client_state is None else client_state,
        "tenantId": "84bd8158",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "AAMkADNVxRAAA="},
        **extra,
    }


async def wanted(redis: ArqRedis) -> set[str]:
    """The calendars with a push sync wanted (a debounce flag set)."""
    return {key.decode().removeprefix(wanted_key("")) async for key in redis.scan_iter(wanted_key("*"))}


async def queued(redis: ArqRedis) -> list[str]:
    return [job_id.decode() for job_id in await redis.zrange(QUEUE_NAME, 0, -1)]


async def jobs(ctx: AppContext) -> list[SyncJob]:
    async with ctx.db.session() as session:
        return list((await session.execute(select(SyncJob))).scalars())


async def assert_nothing_scheduled(ctx: AppContext, redis: ArqRedis) -> None:
    assert await wanted(redis) == set()
    assert await queued(redis) == []
    assert await jobs(ctx) == []


# --- Google -----------------------------------------------------------------------------------------------


async def test_google_sync_message_is_answered_200_and_schedules_nothing(
    client: httpx.AsyncClient, google: Channel, app_ctx: AppContext, redis: ArqRedis
) -> None:
    response = await client.post(GOOGLE, headers=google_headers(google, state="sync"))
    assert response.status_code == 200, response.text
    await assert_nothing_scheduled(app_ctx, redis)


@pytest.mark.parametrize("state", ["exists", "not_exists"])
async def test_google_change_schedules_one_debounced_sync_of_that_calendar(
    client: httpx.AsyncClient, google: Channel, redis: ArqRedis, state: str
) -> None:
    for _ in range(3):
        response = await client.post(GOOGLE, headers=google_headers(google, state=state))
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"status": "received"}}
    assert await wanted(redis) == {google.calendar_id}
    # One push_sync for the three, deferred by the debounce.
    [job_id] = await queued(redis)
    assert job_id.startswith(f"push_sync:{google.calendar_id}:")
    score = await redis.zscore(QUEUE_NAME, job_id)
    assert score is not None and score > (time.time() + 20) * 1000


async def test_a_burst_of_concurrent_notifications_opens_one_window(
    client: httpx.AsyncClient, google: Channel, redis: ArqRedis
) -> None:
    answers = await asyncio.gather(*(client.post(GOOGLE, headers=google_headers(google)) for _ in range(100)))
    assert {a.status_code for a in answers} == {200}
    assert len(await queued(redis)) == 1


async def test_a_storm_for_one_channel_reads_the_channel_once_and_still_checks_every_secret(
    client: httpx.AsyncClient, google: Channel, app_ctx: AppContext
) -> None:
    inbound.CHANNELS.clear()
    lookups: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "calendar_push_channels" in statement:
            lookups.append(statement)

    engine = app_ctx.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(50):
            assert (await client.post(GOOGLE, headers=google_headers(google))).status_code == 200
        # A cached channel still proves each notification's token.
        forged = await client.post(GOOGLE, headers=google_headers(google, token="not-the-token"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(lookups) == 1
    assert forged.status_code == 404


@pytest.mark.parametrize(
    "forge",
    ["unknown_channel", "wrong_token", "missing_token", "token_of_another_channel"],
)
async def test_google_forged_notifications_are_404_and_schedule_nothing(
    client: httpx.AsyncClient, google: Channel, app_ctx: AppContext, redis: ArqRedis, forge: str
) -> None:
    headers = google_headers(google)
    if forge == "unknown_channel":
        headers["X-Goog-Channel-ID"] = "no-such-channel"
    elif forge == "wrong_token":
        headers["X-Goog-Channel-Token"] = google.secret[:-1] + ("A" if google.secret[-1] != "A" else "B")
    elif forge == "missing_token":
        del headers["X-Goog-Channel-Token"]
    else:
        tenant = await make_tenant(app_ctx)
        [other] = await make_indexed_calendars(app_ctx, tenant.workspace_id, "google")
        headers["X-Goog-Channel-Token"] = (await make_push_channel(app_ctx, other)).secret
    response = await client.post(GOOGLE, headers=headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    await assert_nothing_scheduled(app_ctx, redis)


@pytest.mark.parametrize("missing", ["X-Goog-Channel-ID", "X-Goog-Resource-State", "bad-state"])
async def test_google_notification_without_its_headers_is_400(
    client: httpx.AsyncClient, google: Channel, app_ctx: AppContext, redis: ArqRedis, missing: str
) -> None:
    headers = google_headers(google)
    if missing == "bad-state":
        headers["X-Goog-Resource-State"] = "updated"
    else:
        del headers[missing]
    response = await client.post(GOOGLE, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    await assert_nothing_scheduled(app_ctx, redis)


# --- Microsoft Graph ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GRAPH, LIFECYCLE])
async def test_graph_validation_echoes_the_token_as_text_plain(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(
        path, params={"validationToken": "Validation: Testing client application reachability <&> 1"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Validation: Testing client application reachability <&> 1"


async def test_graph_validation_needs_neither_the_database_nor_redis(tmp_path: Any) -> None:
    # Graph validates while our worker waits on POST /subscriptions: the API answers whatever else is busy or down.
    settings = Settings(
        database_url="postgresql+asyncpg://synchook@127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
        secret_key=generate_master_key(),
    )
    ctx = await AppContext.open(settings)
    try:
        async with serve(create_app(settings, context=ctx)) as url, httpx.AsyncClient(base_url=url) as http:
            response = await http.post(GRAPH, params={"validationToken": "abc"}, content=b"", timeout=10)
    finally:
        await ctx.close()
    assert (response.status_code, response.text) == (200, "abc")


async def test_graph_batch_schedules_only_the_items_that_prove_themselves(
    client: httpx.AsyncClient, graph: list[Channel], app_ctx: AppContext, redis: ArqRedis
) -> None:
    good, wrong, other = graph
    unknown = Channel(good.calendar_id, "microsoft", "7f105c7d-0000-0000-0000-000000000000", good.secret)
    body = {
        "value": [
            graph_item(good),
            graph_item(good, changeType="deleted"),  # the same calendar twice: one flag
            graph_item(wrong, client_state=good.secret),  # another subscription's clientState
            graph_item(other, client_state=""),
            graph_item(unknown),
            {"subscriptionId": other.channel_id},  # no clientState
            "not an object",
            {"clientState": other.secret},  # no subscriptionId
        ]
    }
    response = await client.post(GRAPH, json=body)
    assert response.status_code == 202, response.text
    assert await wanted(redis) == {good.calendar_id}
    assert len(await queued(redis)) == 1
    assert await jobs(app_ctx) == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'{"value": {}}', b'{"values": []}', b"\xff\xfe", b"[" * 100 + b"]" * 100],
    ids=["malformed", "empty", "array", "value-not-list", "no-value", "not-utf8", "too-deep"],
)
@pytest.mark.parametrize("path", [GRAPH, LIFECYCLE])
async def test_graph_malformed_bodies_are_400_and_schedule_nothing(
    client: httpx.AsyncClient, graph: list[Channel], app_ctx: AppContext, redis: ArqRedis, body: bytes, path: str
) -> None:
    response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    await assert_nothing_scheduled(app_ctx, redis)


async def test_graph_lifecycle_renews_recreates_and_resyncs(
    client: httpx.AsyncClient, graph: list[Channel], redis: ArqRedis
) -> None:
    renew, removed, missed = graph
    body = {
        "value": [
            graph_item(renew, lifecycleEvent="reauthorizationRequired"),
            graph_item(removed, lifecycleEvent="subscriptionRemoved"),
            graph_item(missed, lifecycleEvent="missed"),
            graph_item(renew, client_state="forged", lifecycleEvent="subscriptionRemoved"),
        ]
    }
    response = await client.post(LIFECYCLE, json=body)
    assert response.status_code == 202, response.text
    ids = await queued(redis)
    assert f"push_renew_channel:{renew.calendar_id}" in ids
    assert f"push_recreate_channel:{removed.calendar_id}" in ids
    assert f"push_recreate_channel:{renew.calendar_id}" not in ids
    # A removed subscription and a missed batch resync their calendars; a renewal alone does not.
    assert await wanted(redis) == {removed.calendar_id, missed.calendar_id}
    job = await redis.get(f"arq:job:push_renew_channel:{renew.calendar_id}")
    assert job is not None and renew.calendar_id in job.decode()


# --- Size, budget, metrics, logs ----------------------------------------------------------------------------


async def _chunked(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        yield b"x" * 65536
        sent += 65536


@pytest.mark.parametrize("path", [GOOGLE, GRAPH, LIFECYCLE])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_10_mb_body_is_413(
    client: httpx.AsyncClient,
    google: Channel,
    app_ctx: AppContext,
    redis: ArqRedis,
    path: str,
    framing: str,
) -> None:
    headers = google_headers(google) if path == GOOGLE else {"Content-Type": "application/json"}
    size = 10 * 1024 * 1024
    content: Any = b"x" * size if framing == "content-length" else _chunked(size)
    try:
        response = await client.post(path, content=content, headers=headers)
    except httpx.TransportError:
        pytest.fail("the server hung up instead of answering 413")
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    await assert_nothing_scheduled(app_ctx, redis)


async def test_a_source_that_spends_its_rejection_budget_gets_429_before_any_lookup(
    client: httpx.AsyncClient, google: Channel, app_ctx: AppContext, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbound, "REJECTED_PER_MINUTE", 5)
    # The budget is per minute: start clear of a minute's end, so all of it falls in one window.
    while time.time() % 60 > 50:
        await asyncio.sleep(0.5)
    # Genuine notifications never spend it.
    for _ in range(10):
        assert (await client.post(GOOGLE, headers=google_headers(google))).status_code == 200
    forged = google_headers(google, token="forged")
    for _ in range(5):
        assert (await client.post(GOOGLE, headers=forged)).status_code == 404
    for headers in (forged, google_headers(google)):
        response = await client.post(GOOGLE, headers=headers)
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Graph's endpoints share the budget of the address; its handshake needs none.
    assert (await client.post(GRAPH, json={"value": []})).status_code == 429
    assert (await client.post(GRAPH, params={"validationToken": "t"})).status_code == 200


async def test_outcomes_are_counted_in_metrics_and_secrets_never_logged(
    client: httpx.AsyncClient, google: Channel, graph: list[Channel], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post(GOOGLE, headers=google_headers(google))
    await client.post(GOOGLE, headers=google_headers(google))
    await client.post(GOOGLE, headers=google_headers(google, token=graph[0].secret))
    await client.post(GRAPH, json={"value": [graph_item(graph[0]), graph_item(graph[1], client_state=google.secret)]})
    await client.post(GRAPH, content=b"{", headers={"Content-Type": "application/json"})
    text = (await client.get("/metrics")).text
    for provider, outcome in [
        ("google", "scheduled"),
        ("google", "coalesced"),
        ("google", "wrong_secret"),
        ("microsoft", "scheduled"),
        ("microsoft", "wrong_secret"),
        ("microsoft", "malformed"),
    ]:
        assert f'synchook_push_notifications_total{{outcome="{outcome}",provider="{provider}"}}' in text
    secrets_seen = [google.secret, *(c.secret for c in graph)]
    assert not [s for s in secrets_seen if s in caplog.text]


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one host holds a whole /64: one budget
        (None, "unknown"),
    ],
)
def test_the_budget_is_kept_per_address_and_per_ipv6_64(host: str | None, source: str) -> None:
    assert inbound.source_of(host) == source
