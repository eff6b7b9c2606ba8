"""A job outlives neither its worker nor its connection: a dead worker's running job runs again at once, and a
job whose connection is deleted ends failed (connection_deleted), never completed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from sqlalchemy import select
from sqlmodel import col

from sync_trigger import runner, service, tasks
from sync_trigger.background import queue_background_sync
from sync_trigger.models import Connection, SyncJob
from synchook.context import AppContext
from synchook.janitor import WORKER_KEY_PREFIX
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories import Tenant, make_tenant

# arq's Worker.close() calls redis-py's deprecated close() (conftest's make_worker closes every worker).
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

RunWorker = Callable[..., Awaitable[Worker]]
MakeWorker = Callable[..., Worker]
STATS = runner.SyncStats(calendars=1, events_created=2)


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


async def connect(client: httpx.AsyncClient, tenant: Tenant) -> str:
    response = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={"provider": "google", "account": "a@example.com", "access_token": "at", "refresh_token": "rt"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def trigger(client: httpx.AsyncClient, tenant: Tenant) -> str:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={})
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["job_id"])


async def job_events(ctx: AppContext, job_id: str) -> list[Event]:
    async with ctx.db.session() as session:
        events = (await session.execute(select(Event).order_by(col(Event.created_at), col(Event.id)))).scalars()
        return [e for e in events if e.data["job_id"] == job_id]


async def load_job(ctx: AppContext, job_id: str) -> SyncJob:
    async with ctx.db.session() as session:
        job = await session.get(SyncJob, job_id)
        assert job is not None
        return job


def stub_sync(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connectors' work, replaced: records the job ids it ran and completes with STATS."""
    ran: list[str] = []

    async def sync(app: AppContext, job: SyncJob, connections: list[Connection]) -> runner.SyncStats:
        ran.append(job.id)
        return STATS

    monkeypatch.setattr(runner, "run_sync", sync)
    return ran


# --- A dead worker's running job -----------------------------------------------------------------


async def test_a_running_job_whose_worker_is_gone_runs_again_at_once(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    redis: ArqRedis,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = stub_sync(monkeypatch)
    await connect(client, tenant)
    job_id = await trigger(client, tenant)
    # A worker took the job and recorded itself on it; then `synchook dev` stopped: its embedded Redis (the
    # queue, the worker's heartbeat) is gone, the database still says running.
    heartbeat = WORKER_KEY_PREFIX + "old-worker"
    await redis.set(heartbeat, b"1")
    async with app_ctx.db.session() as session:
        assert await service.start_job(session, job_id=job_id, worker_id="old-worker") is not None
    await redis.flushall()

    # Not after the 30-minute job timeout: the first recovery run (at a worker's start-up) re-enqueues it.
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 1
    worker = await run_worker()
    assert ran == [job_id]
    job = await load_job(app_ctx, job_id)
    assert job.status == "completed"
    assert job.stats == STATS.as_dict()
    assert job.attempts == 2  # resumed, not started afresh
    assert job.worker_id == worker.ctx["worker_id"]
    types = [e.type for e in await job_events(app_ctx, job_id)]
    assert types == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed"]


async def test_a_new_worker_picks_up_a_dead_workers_job_at_start_up(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    redis: ArqRedis,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = stub_sync(monkeypatch)
    await connect(client, tenant)
    job_id = await trigger(client, tenant)
    async with app_ctx.db.session() as session:
        assert await service.start_job(session, job_id=job_id, worker_id="old-worker") is not None
    await redis.flushall()
    # Only its crons: the recovery cron runs at start-up and queues the job this same burst then runs.
    await run_worker(with_cron=True)
    assert ran == [job_id]
    assert (await load_job(app_ctx, job_id)).status == "completed"


async def test_a_running_job_of_a_live_worker_is_left_alone(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, redis: ArqRedis
) -> None:
    await connect(client, tenant)
    job_id = await trigger(client, tenant)
    await redis.set(WORKER_KEY_PREFIX + "busy-worker", b"1")
    async with app_ctx.db.session() as session:
        assert await service.start_job(session, job_id=job_id, worker_id="busy-worker") is not None
    await redis.flushall()
    await redis.set(WORKER_KEY_PREFIX + "busy-worker", b"1")  # it beats on: a flush costs it one beat
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 0
    assert (await load_job(app_ctx, job_id)).status == "running"

    await redis.delete(WORKER_KEY_PREFIX + "busy-worker")  # it stopped beating: killed
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 1
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 0  # queued once (arq's job-id dedup)


# --- A deleted connection's job ------------------------------------------------------------------


async def assert_failed_connection_deleted(ctx: AppContext, job_id: str) -> None:
    job = await load_job(ctx, job_id)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "connection_deleted"
    events = await job_events(ctx, job_id)
    finished = [e for e in events if e.type in {"calendar.sync.completed", "calendar.sync.failed"}]
    assert [e.type for e in finished] == ["calendar.sync.failed"]
    assert finished[0].data["error"]["code"] == "connection_deleted"
    assert finished[0].data["status"] == "failed"


async def test_a_queued_job_whose_only_connection_is_deleted_fails(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, run_worker: RunWorker
) -> None:
    connection_id = await connect(client, tenant)
    job_id = await trigger(client, tenant)
    deleted = await client.delete(f"/v1/calendar/connections/{connection_id}", headers=tenant.headers)
    assert deleted.status_code == 204
    await run_worker()
    await assert_failed_connection_deleted(app_ctx, job_id)


async def test_a_queued_background_job_fails_when_its_connection_is_deleted(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, run_worker: RunWorker
) -> None:
    connection_id = await connect(client, tenant)
    job_id = await queue_background_sync(app_ctx, connection_id=connection_id, cutoff=utcnow())
    assert job_id is not None
    deleted = await client.delete(f"/v1/calendar/connections/{connection_id}", headers=tenant.headers)
    assert deleted.status_code == 204
    # Failed in the deleting transaction, before any worker sees it.
    await assert_failed_connection_deleted(app_ctx, job_id)
    await run_worker()
    await assert_failed_connection_deleted(app_ctx, job_id)


async def test_a_running_job_whose_connection_is_deleted_fails_and_stops(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    make_worker: MakeWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection_id = await connect(client, tenant)
    job_id = await trigger(client, tenant)
    entered, release = asyncio.Event(), asyncio.Event()
    real_sync = runner.run_sync
    synced: list[Any] = []

    async def held(app: AppContext, job: SyncJob, connections: list[Connection]) -> runner.SyncStats:
        # The job is running with its connections chosen; it waits here until the connection is deleted.
        entered.set()
        await release.wait()
        synced.append(await real_sync(app, job, connections))
        return synced[-1]

    monkeypatch.setattr(runner, "run_sync", held)
    worker = asyncio.create_task(make_worker().main())
    try:
        await asyncio.wait_for(entered.wait(), timeout=30)
        assert (await load_job(app_ctx, job_id)).status == "running"
        deleted = await client.delete(f"/v1/calendar/connections/{connection_id}", headers=tenant.headers)
        assert deleted.status_code == 204
        await assert_failed_connection_deleted(app_ctx, job_id)
    finally:
        release.set()  # also when an assertion failed: the worker's teardown waits for the job
    await asyncio.wait_for(worker, timeout=30)
    assert synced == []  # the runner stopped before its first provider call
    await assert_failed_connection_deleted(app_ctx, job_id)
