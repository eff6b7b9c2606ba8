"""Push syncs (CONTRACT §7) end to end in one process: notifications over real HTTP, a real arq worker, the fake
Google: N notifications in the window make one push job, a notification during a running sync makes exactly one
follow-up after it, one while a covering job is queued is covered by it, and a push job syncs only its calendar."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from sqlalchemy import delete, select, update
from sqlmodel import col

from sync_trigger import service
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.models import SyncJob
from sync_trigger.push import debounce
from sync_trigger.push.debounce import wanted_key
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.ids import new_id
from synchook.outbox import Event
from synchook.queue import QUEUE_NAME
from synchook.timeutil import utcnow
from tests.factories import Tenant, make_tenant
from tests.factories.push import Channel, make_push_channel
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon
from tests.support.workers import running

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

GOOGLE = "/v1/providers/google/notifications"
RunWorker = Callable[..., Awaitable[Worker]]
DEADLINE = 60.0


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account("google", ALICE, calendars=2)
    return fake


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server, push_debounce=0.3, background_sync_interval=0)


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders, tenant: Tenant) -> SyncHarness:
    harness = SyncHarness(app_ctx, fake, tenant.workspace_id)
    await harness.connect("google")
    # The first sync indexes both calendars (and holds their sync tokens); it is over before the test starts.
    await harness.run()
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).values(status="completed", completed_at=utcnow(), trigger="background"))
    return harness


@pytest.fixture
async def channel(app_ctx: AppContext, h: SyncHarness) -> Channel:
    calendars = await h.calendars()
    return await make_push_channel(app_ctx, calendars[ALICE])


def notification(channel: Channel) -> dict[str, str]:
    return {
        "X-Goog-Channel-ID": channel.channel_id,
        "X-Goog-Channel-Token": channel.secret,
        "X-Goog-Resource-State": "exists",
        "X-Goog-Resource-ID": "res-1",
        "X-Goog-Message-Number": "1",
    }


async def push_jobs(ctx: AppContext) -> list[SyncJob]:
    async with ctx.db.session() as session:
        rows = await session.execute(
            select(SyncJob).where(col(SyncJob.trigger) == "push").order_by(col(SyncJob.queued_at))
        )
        return list(rows.scalars())


async def queue_empty(redis: ArqRedis) -> bool:
    return int(await redis.zcard(QUEUE_NAME)) == 0


async def poll(check: Callable[[], Awaitable[bool]], *, what: str, timeout: float = DEADLINE) -> None:
    """Wait for `check` with a generous deadline (no timed assertion: the deadline only bounds a hang)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {timeout}s: {what}")


async def test_notifications_within_the_window_make_one_push_job_of_that_calendar_only(
    client: httpx.AsyncClient,
    app_ctx: AppContext,
    h: SyncHarness,
    tenant: Tenant,
    channel: Channel,
    run_worker: RunWorker,
) -> None:
    h.fake.put_event("google", ALICE, ALICE, summary="Pushed", start=soon())
    h.fake.put_event("google", ALICE, "cal-1", summary="Not notified", start=soon())
    calls_before = len(h.fake.requests("google", "calendarList"))
    for _ in range(10):
        assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
    # The burst worker runs until the queue is empty: the deferred push_sync, then the job it queued.
    await run_worker()
    [job] = await push_jobs(app_ctx)
    assert (job.status, job.mode, job.trigger, job.calendar_id) == (
        "completed",
        "incremental",
        "push",
        channel.calendar_id,
    )
    assert job.stats == {"calendars": 1, "events_created": 1, "events_updated": 0, "events_deleted": 0}
    assert {e.summary for e in (await h.events()).values()} == {"Pushed"}
    # Only the notified calendar: no calendar list was read, and the other calendar's change waits for its poll.
    assert len(h.fake.requests("google", "calendarList")) == calls_before
    async with app_ctx.db.session() as session:
        events = list((await session.execute(select(Event).order_by(col(Event.created_at), col(Event.id)))).scalars())
        quota = await service.sync_quota(session, workspace_id=h.workspace_id, cap=6, now=utcnow())
    lifecycle = [e for e in events if e.type.startswith("calendar.sync.") and e.data["job_id"] == job.id]
    assert [e.type for e in lifecycle] == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed"]
    assert all(e.data["trigger"] == "push" for e in lifecycle)
    assert [e.type for e in events if e.type == "calendar.event.created"] == ["calendar.event.created"]
    # Push jobs never count against the on-demand cap, and the API shows them as such.
    assert quota.used == 0
    shown = (await client.get(f"/v1/calendar/sync/{job.id}", headers=tenant.headers)).json()["data"]
    assert (shown["trigger"], shown["status"]) == ("push", "completed")
    # The window is closed: the next notification makes the next job.
    assert await app_ctx.redis.get(wanted_key(channel.calendar_id)) is None  # type: ignore[union-attr]
    assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
    await run_worker()
    assert [j.status for j in await push_jobs(app_ctx)] == ["completed", "completed"]


async def test_a_notification_during_a_running_sync_makes_exactly_one_follow_up(
    client: httpx.AsyncClient,
    app_ctx: AppContext,
    redis: ArqRedis,
    h: SyncHarness,
    channel: Channel,
    make_worker: Callable[..., Worker],
) -> None:
    # A background job of the connection is running (its worker is "busy": it runs when we say so).
    [connection] = await h.active_connections()
    covering = SyncJob(
        id=new_id("cal_sync"), workspace_id=h.workspace_id, mode="incremental", provider="google",
        trigger="background", connection_id=connection.id, status="running", queued_at=utcnow(), started_at=utcnow(),
    )  # fmt: skip
    async with app_ctx.db.session() as session:
        session.add(covering)
    h.fake.put_event("google", ALICE, ALICE, summary="During", start=soon())
    async with running(make_worker(burst=False)):
        for _ in range(5):
            assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
        token = (await redis.get(wanted_key(channel.calendar_id))) or b""
        # The window closed while the job runs: its push_sync waits for it instead of queueing a second job.
        await poll(
            lambda: _gone(redis, f"arq:job:push_sync:{channel.calendar_id}:{token.decode()}"),
            what="the debounced push_sync ran",
        )
        assert await push_jobs(app_ctx) == []
        assert await redis.get(wanted_key(channel.calendar_id)) == token
        # The running job ends (resumed by the worker, it syncs and completes): one follow-up comes after it.
        assert await service.enqueue_job_run(app_ctx.enqueue, covering.id)
        await poll(lambda: _completed(app_ctx, covering.id), what="the covering job completed")
        await poll(lambda: _one_push_job_done(app_ctx), what="the follow-up push job completed")
        # Every check-back has run (the queue drains): still exactly one.
        await poll(lambda: queue_empty(redis), what="the queue drained", timeout=DEADLINE)
    [follow_up] = await push_jobs(app_ctx)
    assert follow_up.status == "completed" and follow_up.calendar_id == channel.calendar_id
    assert await redis.get(wanted_key(channel.calendar_id)) is None


async def test_a_notification_while_a_covering_job_is_queued_is_covered_by_it(
    client: httpx.AsyncClient,
    app_ctx: AppContext,
    redis: ArqRedis,
    h: SyncHarness,
    channel: Channel,
    run_worker: RunWorker,
) -> None:
    # An on-demand sync of every provider, queued and not started: it will read the calendar after the change.
    queued = SyncJob(
        id=new_id("cal_sync"), workspace_id=h.workspace_id, mode="incremental", trigger="api",
        status="queued", queued_at=utcnow(),
    )  # fmt: skip
    async with app_ctx.db.session() as session:
        session.add(queued)
    h.fake.put_event("google", ALICE, ALICE, summary="Covered", start=soon())
    assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
    # Only the push_sync is queued; it finds the queued job and drops the flag.
    await run_worker()
    assert await redis.get(wanted_key(channel.calendar_id)) is None
    assert await push_jobs(app_ctx) == []
    # The queued job runs and picks the change up; no push job follows it.
    assert await service.enqueue_job_run(app_ctx.enqueue, queued.id)
    await run_worker()
    assert await _completed(app_ctx, queued.id)
    assert "Covered" in {e.summary for e in (await h.events()).values()}
    assert await push_jobs(app_ctx) == []


async def test_a_push_job_for_a_calendar_removed_since_it_was_queued_completes_without_syncing(
    client: httpx.AsyncClient,
    app_ctx: AppContext,
    redis: ArqRedis,
    h: SyncHarness,
    channel: Channel,
    run_worker: RunWorker,
) -> None:
    assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
    token = (await redis.get(wanted_key(channel.calendar_id))) or b""
    # The window closes (push_sync as the worker would run it), then the calendar goes before the job runs.
    assert await debounce.push_sync(app_ctx, channel.calendar_id, token.decode()) == debounce.Outcome.EARLY

    async def window_closed() -> bool:
        return await debounce.push_sync(app_ctx, channel.calendar_id, token.decode()) != debounce.Outcome.EARLY

    await poll(window_closed, what="the debounce window closed")
    [job] = await push_jobs(app_ctx)
    assert job.status == "queued"
    async with app_ctx.db.session() as session:
        await session.execute(delete(Calendar).where(col(Calendar.id) == channel.calendar_id))
    await run_worker()
    [job] = await push_jobs(app_ctx)
    assert job.status == "completed", job.error
    assert job.stats == {"calendars": 0, "events_created": 0, "events_updated": 0, "events_deleted": 0}


async def _gone(redis: ArqRedis, key: str) -> bool:
    return not await redis.exists(key)


async def _completed(ctx: AppContext, job_id: str) -> bool:
    async with ctx.db.session() as session:
        job = await session.get(SyncJob, job_id, populate_existing=True)
    return job is not None and job.status == "completed"


async def _one_push_job_done(ctx: AppContext) -> bool:
    jobs = await push_jobs(ctx)
    return bool(jobs) and all(j.status in ("completed", "failed") for j in jobs)


async def test_a_notification_storm_makes_a_push_job_per_gap_not_one_per_window(
    client: httpx.AsyncClient,
    app_ctx: AppContext,
    redis: ArqRedis,
    h: SyncHarness,
    channel: Channel,
    make_worker: Callable[..., Worker],
) -> None:
    h.fake.put_event("google", ALICE, ALICE, summary="Storm", start=soon())
    async with running(make_worker(burst=False)):
        started, sent = time.monotonic(), 0
        # Notifications back to back for three seconds: ten debounce windows' worth.
        while time.monotonic() - started < 3.0:
            assert (await client.post(GOOGLE, headers=notification(channel))).status_code == 200
            sent += 1
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started

        async def settled() -> bool:
            pending = [j for j in await redis.zrange(QUEUE_NAME, 0, -1) if j.startswith(b"push_sync:")]
            jobs = await push_jobs(app_ctx)
            return not pending and all(j.status in ("completed", "failed") for j in jobs)

        await poll(settled, what="the storm settled")
    jobs = await push_jobs(app_ctx)
    # One at the start, then at most one per MIN_GAP while it lasts, and one after it; however slow the machine
    # was, the bound follows the time the storm took. Without the gap: one per 0.3 s window.
    assert 2 <= len(jobs) <= math.floor(elapsed / debounce.MIN_GAP) + 2, (sent, elapsed, len(jobs))
    assert all(j.status == "completed" for j in jobs)
    assert await redis.get(wanted_key(channel.calendar_id)) is None
