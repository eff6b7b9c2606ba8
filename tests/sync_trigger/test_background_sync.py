"""Background sync: the cron queues incremental jobs per due connection, with events, no overlap, no cap use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from arq.worker import Worker
from sqlalchemy import select, update
from sqlmodel import col

import synchook.root.worker
from sync_trigger import service
from sync_trigger.background import background_cron_jobs, schedule_background_syncs
from sync_trigger.models import Connection, SyncJob
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.support.sync_harness import ALICE, SyncHarness, provider_settings, soon

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
def fake(fake: FakeProviders) -> FakeProviders:
    fake.add_account("google", ALICE)
    fake.add_account("microsoft", ALICE)
    return fake


@pytest.fixture
def settings_overrides(providers_server: FakeProviders) -> dict[str, Any]:
    return provider_settings(providers_server, background_sync_interval=1)


@pytest.fixture
async def h(app_ctx: AppContext, fake: FakeProviders) -> SyncHarness:
    tenant = await make_tenant(app_ctx)
    return SyncHarness(app_ctx, fake, tenant.workspace_id)


async def jobs(ctx: AppContext) -> list[SyncJob]:
    async with ctx.db.session() as session:
        return list((await session.execute(select(SyncJob).order_by(col(SyncJob.queued_at)))).scalars())


async def events_of(ctx: AppContext, job_id: str) -> list[Event]:
    async with ctx.db.session() as session:
        rows = (await session.execute(select(Event).order_by(col(Event.created_at), col(Event.id)))).scalars()
        return [e for e in rows if e.data["job_id"] == job_id]


async def test_a_due_connection_gets_a_background_job_that_runs_with_its_events(
    app_ctx: AppContext, h: SyncHarness, run_worker: RunWorker
) -> None:
    h.fake.add_events("google", ALICE, ALICE, 3, first=soon())
    connection = await h.connect("google")
    await connected_long_ago(app_ctx)
    assert await schedule_background_syncs({"app": app_ctx}) == 1
    [job] = await jobs(app_ctx)
    assert (job.trigger, job.mode, job.connection_id, job.provider) == (
        "background", "incremental", connection.id, "google",
    )  # fmt: skip
    await run_worker()
    [job] = await jobs(app_ctx)
    assert job.status == "completed", job.error
    expected = {"calendars": 1, "events_created": 3, "events_updated": 0, "events_deleted": 0}
    assert job.stats == expected
    events = await events_of(app_ctx, job.id)
    lifecycle = [e for e in events if e.type.startswith("calendar.sync.")]
    assert [e.type for e in lifecycle] == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed"]
    assert lifecycle[-1].data["stats"] == expected and lifecycle[0].provider == "google"
    # The job's three created changes, handed to the queue and dispatched like the lifecycle events.
    assert [e.type for e in events if e not in lifecycle] == ["calendar.event.created"] * 3
    assert all(e.dispatched_at is not None for e in events)
    # Background jobs leave the on-demand cap untouched.
    async with app_ctx.db.session() as session:
        quota = await service.sync_quota(session, workspace_id=h.workspace_id, cap=6, now=utcnow())
    assert quota.used == 0


async def connected_long_ago(ctx: AppContext) -> None:
    """Every connection was made a day ago: due for its first background sync."""
    async with ctx.db.session() as session:
        await session.execute(update(Connection).values(created_at=utcnow() - timedelta(days=1)))


async def test_a_just_connected_account_waits_one_interval_for_its_first_background_sync(
    app_ctx: AppContext, h: SyncHarness
) -> None:
    # The caller syncs on demand right after connecting; a background job seconds later only doubles it.
    await h.connect("google")
    assert await schedule_background_syncs({"app": app_ctx}) == 0
    await connected_long_ago(app_ctx)
    assert await schedule_background_syncs({"app": app_ctx}) == 1


async def set_last_background_sync(ctx: AppContext, when: datetime) -> None:
    async with ctx.db.session() as session:
        await session.execute(update(Connection).values(last_background_sync_at=when))


async def test_it_fires_again_after_the_interval_and_not_before(
    app_ctx: AppContext, h: SyncHarness, run_worker: RunWorker
) -> None:
    h.fake.add_events("microsoft", ALICE, ALICE, 2, first=soon())
    await h.connect("microsoft")
    await connected_long_ago(app_ctx)
    assert await schedule_background_syncs({"app": app_ctx}) == 1
    await run_worker()
    # Set the clock of the last background sync explicitly: a loaded machine must not make this flaky.
    await set_last_background_sync(app_ctx, utcnow())
    assert await schedule_background_syncs({"app": app_ctx}) == 0
    h.fake.put_event("microsoft", ALICE, ALICE, summary="Later", start=soon(5))
    await set_last_background_sync(app_ctx, utcnow() - timedelta(seconds=1.5))
    assert await schedule_background_syncs({"app": app_ctx}) == 1
    await run_worker()
    first, second = await jobs(app_ctx)
    assert first.stats is not None and first.stats["events_created"] == 2
    assert second.status == "completed"
    assert second.stats == {"calendars": 1, "events_created": 1, "events_updated": 0, "events_deleted": 0}


async def test_a_connection_with_a_queued_or_running_sync_is_not_doubled(app_ctx: AppContext, h: SyncHarness) -> None:
    google = await h.connect("google")
    await connected_long_ago(app_ctx)
    microsoft = await h.connect("microsoft")
    await connected_long_ago(app_ctx)
    # An on-demand job for Google alone is running: only Microsoft is due.
    running = await h.job(provider="google")
    assert await schedule_background_syncs({"app": app_ctx}) == 1
    queued = [j for j in await jobs(app_ctx) if j.trigger == "background"]
    assert [j.connection_id for j in queued] == [microsoft.id]
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).where(col(SyncJob.id) == running.id).values(status="completed"))
    await asyncio.sleep(1.1)
    # Microsoft's background job is still queued (no worker ran): it is not queued twice.
    assert await schedule_background_syncs({"app": app_ctx}) == 1
    queued = [j for j in await jobs(app_ctx) if j.trigger == "background"]
    assert sorted(j.connection_id or "" for j in queued) == sorted([microsoft.id, google.id])


async def test_connections_needing_reauth_are_skipped(app_ctx: AppContext, h: SyncHarness) -> None:
    connection = await h.connect("google")
    await connected_long_ago(app_ctx)
    async with app_ctx.db.session() as session:
        await session.execute(
            update(type(connection)).where(col(type(connection).id) == connection.id).values(status="reauth_required")
        )
    assert await schedule_background_syncs({"app": app_ctx}) == 0
    assert await jobs(app_ctx) == []


async def test_interval_zero_turns_background_sync_off(app_ctx: AppContext, h: SyncHarness) -> None:
    await h.connect("google")
    await connected_long_ago(app_ctx)
    app_ctx.settings = app_ctx.settings.model_copy(update={"background_sync_interval": 0})
    assert background_cron_jobs(app_ctx.settings) == []
    assert await schedule_background_syncs({"app": app_ctx}) == 0
    on = app_ctx.settings.model_copy(update={"background_sync_interval": 300})
    [job] = background_cron_jobs(on)
    assert job.name == "cron:schedule_background_syncs" and job.unique


async def test_the_cron_fires_on_a_worker(
    app_ctx: AppContext, h: SyncHarness, make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    h.fake.add_events("google", ALICE, ALICE, 1, first=soon())
    await h.connect("google")
    await connected_long_ago(app_ctx)
    # The scheduler's cron alone (until tasks.py wires it), run at start-up by a burst worker.
    monkeypatch.setattr(synchook.root.worker, "cron_jobs", background_cron_jobs)
    # An hour's interval: with the module's 1 s, a slow burst crossing a 10 s tick queued a second job (CI).
    hourly = app_ctx.settings.model_copy(update={"background_sync_interval": 3600})
    await make_worker(with_cron=True, settings=hourly).main()
    [job] = await jobs(app_ctx)
    assert job.trigger == "background"
    if job.status == "queued":  # the burst may end before picking the job up
        await make_worker().main()
        [job] = await jobs(app_ctx)
    assert job.status == "completed" and job.stats is not None and job.stats["events_created"] == 1
