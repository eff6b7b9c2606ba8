"""Push channel lifecycle (CONTRACT §7) against the fake providers over loopback, with a real worker and Redis:
a channel per calendar after its first sync, failures retried with backoff, renewal, token refresh during a
channel call, stopping with the connection, secrets sealed and never logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from arq.worker import Worker
from sqlalchemy import select, update
from sqlmodel import col

from sync_trigger.calendar_index.models import Calendar
from sync_trigger.models import Connection
from sync_trigger.push import lifecycle, service
from sync_trigger.push import tasks as push_tasks
from sync_trigger.push.models import PushChannel
from sync_trigger.push.tasks import renew_push_channels
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.timeutil import isoformat, utcnow
from tests.factories import Tenant, make_tenant
from tests.support.receiver import Receiver
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

G, M = "google", "microsoft"
ROOT = "/functions/v1/api-gateway"
RunWorker = Callable[..., Awaitable[Worker]]


class Endpoint(Receiver):
    """Where providers reach us: records Google's messages and answers Graph's validation handshake with the
    decoded token as text/plain (what the inbound endpoints do), unless `refuse_validation`."""

    refuse_validation = False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("validationToken")
        if token is None:
            return await super()._handle(request)
        await request.read()
        if self.refuse_validation:
            return web.Response(status=500)
        return web.Response(text=token, content_type="text/plain")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with Endpoint() as server:
        yield server


@pytest.fixture
def settings_overrides(providers_server: FakeProviders, endpoint: Endpoint) -> dict[str, Any]:
    return provider_settings(providers_server, public_url=endpoint.url(""), root_path=ROOT)


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account(G, ALICE)
    fake.add_account(M, ALICE)
    return fake


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
def h(app_ctx: AppContext, fake: FakeProviders, tenant: Tenant) -> SyncHarness:
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


async def rows(ctx: AppContext) -> list[PushChannel]:
    async with ctx.db.session() as session:
        return list((await session.execute(select(PushChannel).order_by(col(PushChannel.created_at)))).scalars())


async def calendar_id(ctx: AppContext, provider: str, provider_calendar_id: str = ALICE) -> str:
    async with ctx.db.session() as session:
        found = await session.execute(
            select(col(Calendar.id)).where(
                col(Calendar.provider) == provider, col(Calendar.calendar_id) == provider_calendar_id
            )
        )
        return str(found.scalar_one())


async def synced_with_channel(h: SyncHarness, run_worker: RunWorker, provider: str) -> tuple[Connection, PushChannel]:
    """Connect, sync once (the runner queues the channel task), run the worker: the calendar's active channel."""
    connection = await h.connect(provider)
    await h.run(provider=provider)
    await run_worker()
    [row] = [r for r in await rows(h.ctx) if r.connection_id == connection.id]
    assert row.status == "active", row
    return connection, row


def address(endpoint: Endpoint, path: str) -> str:
    return endpoint.url(f"{ROOT}{path}")


async def make_due(ctx: AppContext) -> None:
    async with ctx.db.session() as session:
        await session.execute(update(PushChannel).values(renew_at=utcnow() - timedelta(seconds=1)))


# --- Creation --------------------------------------------------------------------------------------


async def test_a_google_calendar_gets_a_watch_channel_after_its_first_sync(
    h: SyncHarness, endpoint: Endpoint, run_worker: RunWorker, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    connection, row = await synced_with_channel(h, run_worker, G)
    [channel] = h.fake.push_channels(G)
    # What we asked for: our channel id, the notification URL under SYNCHOOK_PUBLIC_URL + ROOT_PATH, a token, 7 days.
    assert channel.id == row.channel_id and channel.id.startswith("pch_")
    assert channel.address == address(endpoint, "/v1/providers/google/notifications")
    assert channel.calendar_id == ALICE and row.resource_id == channel.resource_id
    assert timedelta(days=7) - timedelta(minutes=5) < channel.expiration - utcnow() <= timedelta(days=7)
    # The token is stored sealed, bound to the calendar, and opens to what Google holds.
    assert channel.token and len(channel.token) >= 40
    assert row.secret_sealed is not None and channel.token not in row.secret_sealed
    assert h.ctx.box.open(row.secret_sealed, context=row.calendar_id) == channel.token
    assert channel.token not in repr(row)
    assert row.calendar_id == await calendar_id(h.ctx, G) and row.connection_id == connection.id
    assert row.expires_at == channel.expiration and row.failures == 0
    # Renewal is due an hour before expiry.
    assert row.renew_at == channel.expiration - timedelta(hours=1)
    # The API shows it on the calendar and on its connection.
    push = {"status": "active", "expires_at": isoformat(channel.expiration)}
    calendars = (await client.get("/v1/calendar/calendars", headers=tenant.headers)).json()["data"]
    assert [c["push"] for c in calendars] == [push]
    shown = (await client.get(f"/v1/calendar/connections/{connection.id}", headers=tenant.headers)).json()["data"]
    assert shown["push"] == push
    # Google's `sync` message reached the address.
    [sync] = await endpoint.wait_for(1)
    assert sync.headers["X-Goog-Resource-State"] == "sync" and sync.headers["X-Goog-Channel-ID"] == channel.id


async def test_a_graph_calendar_gets_a_subscription_after_its_first_sync(
    h: SyncHarness, endpoint: Endpoint, run_worker: RunWorker
) -> None:
    _, row = await synced_with_channel(h, run_worker, M)
    [sub] = h.fake.push_channels(M)
    assert sub.id == row.channel_id and row.resource_id is None
    assert sub.address == address(endpoint, "/v1/providers/microsoft/notifications")
    assert sub.lifecycle_url == address(endpoint, "/v1/providers/microsoft/lifecycle")
    assert sub.resource == f"me/calendars/{ALICE}/events"
    assert sub.change_types == ("created", "updated", "deleted")
    assert timedelta(minutes=4225) < sub.expiration - utcnow() <= timedelta(minutes=4231)
    assert sub.token and len(sub.token) <= 128
    assert row.secret_sealed is not None and sub.token not in row.secret_sealed
    assert h.ctx.box.open(row.secret_sealed, context=row.calendar_id) == sub.token
    assert row.expires_at == sub.expiration


async def test_a_calendar_added_later_gets_its_channel_after_its_own_first_sync(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker
) -> None:
    await synced_with_channel(h, run_worker, M)
    fake.add_calendar(M, ALICE, "team", name="Team")
    await h.run()
    await run_worker()
    assert sorted(c.calendar_id for c in fake.push_channels(M)) == [ALICE, "team"]
    assert [r.status for r in await rows(h.ctx)] == ["active", "active"]
    # Nothing is missing any more: a further sync queues no channel work.
    await h.run()
    assert [k for k in await h.ctx.redis.keys("arq:job:*") if b"push_" in k] == []  # type: ignore[union-attr]


async def test_the_google_channel_is_stored_before_the_watch_call(h: SyncHarness, fake: FakeProviders) -> None:
    # A notification can arrive while the watch call is in flight: the row must name the channel by then.
    await h.connect(G)
    await h.run()
    cal = await calendar_id(h.ctx, G)
    fake.latency = 2.0  # the fake holds its answer: the watch call is in flight meanwhile
    creating = asyncio.create_task(lifecycle.refresh_channel(h.ctx, cal))
    while not fake.requests(G, "/events/watch"):  # the request has reached Google
        assert not creating.done()
        await asyncio.sleep(0.01)
    [during] = await rows(h.ctx)
    assert not creating.done()
    assert await creating == "active"
    [after] = await rows(h.ctx)
    [channel] = fake.push_channels(G)
    assert during.status == "pending" and during.channel_id == channel.id == after.channel_id
    assert h.ctx.box.open(during.secret_sealed or "", context=cal) == channel.token


async def test_one_calendar_gets_one_channel_when_workers_race(h: SyncHarness, fake: FakeProviders) -> None:
    await h.connect(G)
    await h.run()
    cal = await calendar_id(h.ctx, G)
    # As ensure_channels calls it. A worker that reads the row only after another has made the channel and released
    # its lease (a new connection can take that long) leaves it alone: it is not replaced by a second watch call.
    results = await asyncio.gather(*(lifecycle.refresh_channel(h.ctx, cal, only_missing=True) for _ in range(3)))
    assert sorted(str(r) for r in results) == ["None", "None", "active"]
    assert len(fake.push_channels(G)) == 1 and len(fake.requests(G, "/events/watch")) == 1


async def test_ensuring_a_calendar_whose_channel_was_made_meanwhile_makes_no_second_channel(
    h: SyncHarness, fake: FakeProviders
) -> None:
    # ensure_channels lists the calendars without a channel, then makes each one's: another worker's ensure can make
    # it in between. Replacing that live channel would cost a watch and a stop call for nothing.
    connection = await h.connect(G)
    await h.run()
    cal = await calendar_id(h.ctx, G)
    assert await lifecycle.refresh_channel(h.ctx, cal, only_missing=True) == "active"
    [made] = await rows(h.ctx)
    assert await lifecycle.refresh_channel(h.ctx, cal, only_missing=True) is None
    assert await lifecycle.ensure_channels(h.ctx, connection.id) == 0
    assert len(fake.requests(G, "/events/watch")) == 1 and fake.requests(G, "/channels/stop") == []
    [kept] = await rows(h.ctx)
    assert (kept.channel_id, kept.status) == (made.channel_id, "active")


async def test_nothing_is_created_with_push_off(h: SyncHarness, run_worker: RunWorker, fake: FakeProviders) -> None:
    h.ctx.settings = h.ctx.settings.model_copy(update={"public_url": None})
    await h.connect(G)
    await h.run()
    await run_worker(settings=h.ctx.settings)
    assert await rows(h.ctx) == [] and fake.push_channels() == []
    assert await lifecycle.refresh_channel(h.ctx, await calendar_id(h.ctx, G)) is None


async def test_an_unknown_calendar_is_nothing_to_do(h: SyncHarness) -> None:
    # Only Google and Microsoft calendars have push; an unknown calendar id is nothing to do.
    assert await lifecycle.refresh_channel(h.ctx, "cal_01JAAAAAAAAAAAAAAAAAAAAAAA") is None
    assert await rows(h.ctx) == []


# --- Failure and retry -----------------------------------------------------------------------------


async def test_a_failed_create_shows_failed_and_the_cron_retries_it_with_backoff(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await h.connect(G)
    await h.run()
    cal = await calendar_id(h.ctx, G)
    fake.fail_next(G, 1, status=400)
    before = utcnow()
    assert await lifecycle.refresh_channel(h.ctx, cal) == "failed"
    [row] = await rows(h.ctx)
    assert (row.status, row.failures) == ("failed", 1)
    assert row.renew_at is not None and before + timedelta(seconds=60) <= row.renew_at <= utcnow() + timedelta(
        seconds=60
    )
    calendars = (await client.get("/v1/calendar/calendars", headers=tenant.headers)).json()["data"]
    assert calendars[0]["push"] == {"status": "failed", "expires_at": None}
    # Not due yet: the cron leaves it alone.
    assert await renew_push_channels({"app": h.ctx}) == 0
    # A second failure doubles the wait.
    await make_due(h.ctx)
    fake.fail_next(G, 1, status=400)
    assert await lifecycle.refresh_channel(h.ctx, cal, only_due=True) == "failed"
    [row] = await rows(h.ctx)
    assert row.failures == 2 and row.renew_at is not None and row.renew_at >= utcnow() + timedelta(seconds=110)
    # Due again: the cron queues the retry and a worker makes the channel.
    await make_due(h.ctx)
    assert await renew_push_channels({"app": h.ctx}) == 1
    await run_worker()
    [row] = await rows(h.ctx)
    [channel] = fake.push_channels(G)
    assert (row.status, row.failures, row.channel_id) == ("active", 0, channel.id)


async def test_a_failed_graph_validation_fails_the_create(
    h: SyncHarness, endpoint: Endpoint, fake: FakeProviders
) -> None:
    await h.connect(M)
    await h.run()
    endpoint.refuse_validation = True
    assert await lifecycle.refresh_channel(h.ctx, await calendar_id(h.ctx, M)) == "failed"
    [row] = await rows(h.ctx)
    assert row.status == "failed" and row.channel_id is None and fake.push_channels(M) == []


# --- Renewal ---------------------------------------------------------------------------------------


async def test_the_renewal_cron_runs_on_a_worker_only_with_push_on(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker, make_worker: Callable[..., Worker]
) -> None:
    assert push_tasks.cron_jobs(h.ctx.settings.model_copy(update={"public_url": None})) == []
    [job] = push_tasks.cron_jobs(h.ctx.settings)
    assert job.name == "cron:renew_push_channels" and job.unique
    await synced_with_channel(h, run_worker, M)
    await make_due(h.ctx)
    # A burst worker with its crons runs them at start-up: the renewal is queued (and run, or left for the next).
    await make_worker(with_cron=True).main()
    await run_worker()
    assert [r.method for r in fake.requests(M, "/subscriptions")] == ["POST", "PATCH"]
    [row] = await rows(h.ctx)
    assert row.status == "active" and row.renew_at is not None and row.renew_at > utcnow()


async def test_google_renewal_creates_a_new_channel_then_stops_the_old(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker
) -> None:
    _, old = await synced_with_channel(h, run_worker, G)
    [old_channel] = fake.push_channels(G)
    await make_due(h.ctx)
    assert await renew_push_channels({"app": h.ctx}) == 1
    await run_worker()
    [new] = await rows(h.ctx)
    [new_channel] = fake.push_channels(G)
    assert new.status == "active" and new.channel_id == new_channel.id != old.channel_id
    assert h.ctx.box.open(new.secret_sealed or "", context=new.calendar_id) == new_channel.token != old_channel.token
    ended = {c.id: c.status for c in fake.push_channels(G, include_ended=True)}
    assert ended == {old_channel.id: "stopped", new_channel.id: "live"}
    # New first, then the old one stopped.
    calls = [r.path.rsplit("/", 2)[-2:] for r in fake.requests(G) if r.method == "POST"]
    assert calls[-2:] == [["events", "watch"], ["channels", "stop"]]
    assert new.renew_at is not None and new.renew_at > utcnow() + timedelta(days=6)


async def test_graph_renewal_patches_the_subscription(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker
) -> None:
    _, old = await synced_with_channel(h, run_worker, M)
    async with h.ctx.db.session() as session:
        # As if it had been created a day ago: the PATCH pushes the expiry out again.
        await session.execute(update(PushChannel).values(expires_at=utcnow() + timedelta(days=1)))
    await make_due(h.ctx)
    assert await renew_push_channels({"app": h.ctx}) == 1
    await run_worker()
    [row] = await rows(h.ctx)
    [sub] = fake.push_channels(M)
    assert (row.status, row.channel_id, row.secret_sealed) == ("active", old.channel_id, old.secret_sealed)
    assert row.expires_at == sub.expiration and row.expires_at > utcnow() + timedelta(days=2)
    assert [r.method for r in fake.requests(M, "/subscriptions")] == ["POST", "PATCH"]


async def test_graph_renewal_of_a_vanished_subscription_creates_a_new_one(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker
) -> None:
    _, old = await synced_with_channel(h, run_worker, M)
    fake.expire_push_channel(M, old.channel_id or "")
    await make_due(h.ctx)
    assert await lifecycle.refresh_channel(h.ctx, old.calendar_id, only_due=True) == "active"
    [row] = await rows(h.ctx)
    [sub] = fake.push_channels(M)
    assert row.channel_id == sub.id != old.channel_id and row.status == "active"
    assert h.ctx.box.open(row.secret_sealed or "", context=row.calendar_id) == sub.token
    assert [(r.method, r.status) for r in fake.requests(M, "/subscriptions")][1:] == [("PATCH", 404), ("POST", 201)]


async def test_renew_and_recreate_tasks_by_name(h: SyncHarness, fake: FakeProviders, run_worker: RunWorker) -> None:
    _, old = await synced_with_channel(h, run_worker, M)
    # reauthorizationRequired: renew now, due or not.
    await h.ctx.enqueue(service.RENEW_TASK, old.calendar_id)
    await run_worker()
    assert [r.method for r in fake.requests(M, "/subscriptions")] == ["POST", "PATCH"]
    # subscriptionRemoved: Graph ended it; a new one replaces it.
    fake.send_lifecycle(old.channel_id or "", "subscriptionRemoved")
    await h.ctx.enqueue(service.RECREATE_TASK, old.calendar_id)
    await run_worker()
    [row] = await rows(h.ctx)
    [sub] = fake.push_channels(M)
    assert row.status == "active" and row.channel_id == sub.id != old.channel_id


# --- Tokens ----------------------------------------------------------------------------------------


async def test_an_expired_access_token_is_refreshed_during_a_channel_call(h: SyncHarness, fake: FakeProviders) -> None:
    connection = await h.connect(G)
    await h.run()
    fake.expire_access_tokens(G)
    assert await lifecycle.refresh_channel(h.ctx, await calendar_id(h.ctx, G)) == "active"
    assert [r.status for r in fake.requests(G, "/events/watch")] == [401, 200]
    assert [r.status for r in fake.requests(G, "/token")] == [200]
    stored = await h.connection(connection.id)
    assert h.ctx.box.open(stored.access_token_sealed, context=connection.id) == fake.account(G).access_token


# --- Stopping --------------------------------------------------------------------------------------


async def test_deleting_a_connection_stops_its_channels(
    h: SyncHarness,
    fake: FakeProviders,
    run_worker: RunWorker,
    client: httpx.AsyncClient,
    tenant: Tenant,
    redis: Any,
) -> None:
    google, google_row = await synced_with_channel(h, run_worker, G)
    microsoft, microsoft_row = await synced_with_channel(h, run_worker, M)
    secrets = [c.token or "" for c in fake.push_channels()] + [fake.account(p).access_token for p in (G, M)]
    for connection in (google, microsoft):
        deleted = await client.delete(f"/v1/calendar/connections/{connection.id}", headers=tenant.headers)
        assert deleted.status_code == 204
    assert await rows(h.ctx) == []
    # What waits in Redis carries no plaintext token or channel secret.
    queued = b"".join([await redis.get(key) or b"" for key in await redis.keys("arq:job:*")])
    assert b"push_stop_channels" in queued
    assert not [s for s in secrets if s.encode() in queued]
    # The deleted connection's access token expired meanwhile: its sealed refresh token still stops the channel.
    fake.expire_access_tokens(G)
    await run_worker()
    assert [r.status for r in fake.requests(G, "/channels/stop")] == [401, 204]
    assert fake.push_channels() == []
    ended = {c.id: c.status for c in fake.push_channels(include_ended=True)}
    assert ended == {google_row.channel_id: "stopped", microsoft_row.channel_id: "stopped"}


async def test_a_calendar_gone_from_the_account_has_its_channel_stopped(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker
) -> None:
    fake.add_calendar(G, ALICE, "team@example.com", name="Team")
    await synced_with_channel_pair(h, run_worker)
    team = next(c for c in fake.push_channels(G) if c.calendar_id == "team@example.com")
    del fake.account(G).calendars["team@example.com"]
    await h.run()
    await run_worker()
    assert {c.calendar_id for c in fake.push_channels(G)} == {ALICE}
    assert {c.id: c.status for c in fake.push_channels(G, include_ended=True)}[team.id] == "stopped"


async def synced_with_channel_pair(h: SyncHarness, run_worker: RunWorker) -> None:
    await h.connect(G)
    await h.run()
    await run_worker()
    assert [r.status for r in await rows(h.ctx)] == ["active", "active"]


# --- Secrets ---------------------------------------------------------------------------------------


async def test_channel_secrets_and_tokens_never_reach_the_logs(
    h: SyncHarness, fake: FakeProviders, run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.expire_access_tokens(G)
    await synced_with_channel(h, run_worker, G)
    await synced_with_channel(h, run_worker, M)
    fake.fail_next(M, 1, status=400)
    await make_due(h.ctx)
    await renew_push_channels({"app": h.ctx})
    await run_worker()
    await make_due(h.ctx)
    await renew_push_channels({"app": h.ctx})
    await run_worker()
    secrets = [c.token or "" for c in fake.push_channels(include_ended=True)]
    secrets += [fake.account(p).access_token for p in (G, M)] + [fake.account(p).refresh_token for p in (G, M)]
    assert len(secrets) >= 6 and all(secrets)
    assert "push" in caplog.text
    assert [s for s in secrets if s in caplog.text] == []
