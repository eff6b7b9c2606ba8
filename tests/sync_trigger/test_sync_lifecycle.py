"""The job lifecycle on a real arq worker: queued → running → completed | failed, each with its outbox event."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from sqlalchemy import select, update
from sqlmodel import col

from sync_trigger import runner, service, tasks
from sync_trigger.models import Connection, SyncJob
from synchook.context import AppContext
from synchook.outbox import Event
from synchook.queue import decode_job, encode_job, free_port
from synchook.relay import sweep_outbox
from synchook.root.app import create_app
from synchook.settings import Settings
from synchook.timeutil import parse_datetime, utcnow
from tests.factories import Tenant, make_tenant
from webhooks.delivery.stages import webhook_payload
from webhooks.dispatch import dispatch_events

# arq's Worker.close() calls redis-py's deprecated close() (conftest's make_worker closes every worker).
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

RunWorker = Callable[..., Awaitable[Worker]]
EVENT_DATA_KEYS = {
    "job_id",
    "workspace_id",
    "mode",
    "trigger",
    "connection_id",
    "calendar_id",
    "provider",
    "status",
    "queued_at",
    "started_at",
    "completed_at",
    "stats",
    "error",
}
STATS_KEYS = {"calendars", "events_created", "events_updated", "events_deleted"}


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


async def trigger(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any] | None = None) -> str:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=body or {})
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


async def sweep(app: AppContext) -> int:
    """The outbox sweep as the worker's cron runs it, with no worker to send from (the rows go to the queue)."""
    return await sweep_outbox(app, partial(dispatch_events, app, worker=None))


def assert_event_shape(event: Event, tenant: Tenant, job_id: str) -> None:
    body = webhook_payload(event.id, event.type, event.created_at, event.data)
    assert set(body) == {"id", "type", "timestamp", "data"}
    assert body["id"].startswith("evt_")
    assert set(body["data"]) == EVENT_DATA_KEYS
    assert body["data"]["job_id"] == job_id
    assert body["data"]["workspace_id"] == tenant.workspace_id
    expected = {"queued": "queued", "started": "running", "completed": "completed", "failed": "failed"}
    assert body["data"]["status"] == expected[event.type.rsplit(".", 1)[1]]


async def test_a_job_runs_and_each_lifecycle_event_is_stored_once_and_dispatched(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, run_worker: RunWorker
) -> None:
    job_id = await trigger(client, tenant)
    await run_worker()
    events = await job_events(app_ctx, job_id)
    # The placeholder runner fails honestly (connector_unavailable) until the connectors land; either end is fine.
    assert [e.type for e in events][:2] == ["calendar.sync.queued", "calendar.sync.started"]
    assert len(events) == 3
    assert events[2].type in {"calendar.sync.completed", "calendar.sync.failed"}
    for event in events:
        assert_event_shape(event, tenant, job_id)
        assert event.dispatched_at is not None
        assert event.workspace_id == tenant.workspace_id
    queued, started, finished = (e.data for e in events)
    assert queued["started_at"] is None and queued["stats"] is None and queued["error"] is None
    assert started["started_at"] is not None and started["completed_at"] is None
    assert finished["completed_at"] is not None
    assert set(finished["stats"]) == STATS_KEYS
    if finished["status"] == "failed":
        assert set(finished["error"]) == {"code", "message"}
    job = (await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)).json()["data"]
    assert job["status"] == finished["status"]
    assert job["started_at"] == finished["started_at"]
    assert job["completed_at"] == finished["completed_at"]
    assert job["error"] == finished["error"]
    assert job["stats"] == finished["stats"]


async def test_a_successful_sync_completes_with_its_stats(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, list[str]]] = []

    async def connector_stub(app: AppContext, job: SyncJob, connections: list[Connection]) -> runner.SyncStats:
        seen.append((job.status, [c.provider for c in connections]))
        return runner.SyncStats(calendars=2, events_created=5, events_updated=1, events_deleted=3)

    monkeypatch.setattr(runner, "run_sync", connector_stub)
    job_id = await trigger(client, tenant, {"mode": "full"})
    await run_worker()
    assert seen == [("running", ["google"])]
    events = await job_events(app_ctx, job_id)
    assert [e.type for e in events] == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.completed"]
    completed = events[2].data
    assert completed["stats"] == {"calendars": 2, "events_created": 5, "events_updated": 1, "events_deleted": 3}
    assert completed["error"] is None
    assert parse_datetime(completed["completed_at"]) >= parse_datetime(completed["started_at"])
    job = await load_job(app_ctx, job_id)
    assert job.status == "completed"
    assert job.attempts == 1


async def test_a_sync_failure_is_recorded_with_its_code(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing(app: AppContext, job: SyncJob, connections: list[Connection]) -> runner.SyncStats:
        raise runner.SyncFailure("reauth_required", "The Google account must be reconnected", runner.SyncStats(1))

    monkeypatch.setattr(runner, "run_sync", failing)
    job_id = await trigger(client, tenant)
    await run_worker()
    failed = (await job_events(app_ctx, job_id))[-1]
    assert failed.type == "calendar.sync.failed"
    assert failed.data["error"] == {"code": "reauth_required", "message": "The Google account must be reconnected"}
    assert failed.data["stats"]["calendars"] == 1


async def test_an_unexpected_exception_fails_the_job_as_internal_error(
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    run_worker: RunWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(app: AppContext, job: SyncJob, connections: list[Connection]) -> runner.SyncStats:
        raise KeyError("boom")

    monkeypatch.setattr(runner, "run_sync", broken)
    job_id = await trigger(client, tenant)
    await run_worker()
    failed = (await job_events(app_ctx, job_id))[-1]
    assert failed.type == "calendar.sync.failed"
    assert failed.data["error"]["code"] == "internal_error"
    assert "boom" not in failed.data["error"]["message"]


# --- Crash safety --------------------------------------------------------------------------------


async def test_worker_killed_between_start_and_finish_loses_and_duplicates_nothing(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, run_worker: RunWorker
) -> None:
    job_id = await trigger(client, tenant)
    # Transaction 1 of the task ran, then the worker died before the connectors returned.
    async with app_ctx.db.session() as session:
        started = await service.start_job(session, job_id=job_id)
    assert started is not None and started.job.status == "running"
    # arq runs the job again (it is still in the queue); the dead worker never handed off its started
    # event, so the outbox sweeper (a cron) finds it.
    await run_worker()
    assert await sweep(app_ctx) == 1
    events = await job_events(app_ctx, job_id)
    types = [e.type for e in events]
    assert types.count("calendar.sync.queued") == 1
    assert types.count("calendar.sync.started") == 1
    assert len(types) == 3 and types[2] in {"calendar.sync.completed", "calendar.sync.failed"}
    assert all(e.dispatched_at is not None for e in events)
    job = await load_job(app_ctx, job_id)
    assert job.attempts == 2
    assert job.started_at == started.job.started_at


async def test_rerunning_a_finished_job_is_a_no_op(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, run_worker: RunWorker
) -> None:
    job_id = await trigger(client, tenant)
    await run_worker()
    before = await load_job(app_ctx, job_id)
    assert await tasks.run_sync_job({"app": app_ctx}, job_id) == "noop"
    after = await load_job(app_ctx, job_id)
    assert (after.status, after.completed_at, after.attempts) == (before.status, before.completed_at, before.attempts)
    assert len(await job_events(app_ctx, job_id)) == 3


async def test_unknown_job_is_a_no_op(app_ctx: AppContext) -> None:
    assert await tasks.run_sync_job({"app": app_ctx}, "cal_sync_01HYVTB5QK8ZA1QH82R7Q9N2PD") == "noop"


async def test_a_job_interrupted_too_often_fails_instead_of_looping(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    job_id = await trigger(client, tenant)
    async with app_ctx.db.session() as session:
        assert await service.start_job(session, job_id=job_id) is not None
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).where(col(SyncJob.id) == job_id).values(attempts=service.MAX_ATTEMPTS))
    assert await tasks.run_sync_job({"app": app_ctx}, job_id) == "failed"
    events = await job_events(app_ctx, job_id)
    assert [e.type for e in events] == ["calendar.sync.queued", "calendar.sync.started", "calendar.sync.failed"]
    assert events[2].data["error"]["code"] == "internal_error"


# --- Redis lost: the database is the source of truth ----------------------------------------------


async def test_redis_down_at_commit_the_sweeper_and_recovery_repair_it(
    app_ctx: AppContext, settings: Settings, redis: ArqRedis, tenant: Tenant, run_worker: RunWorker
) -> None:
    dead = ArqRedis(
        host="127.0.0.1",
        port=free_port(),
        socket_connect_timeout=0.5,
        job_serializer=encode_job,
        job_deserializer=decode_job,
    )
    down = AppContext(settings=settings, db=app_ctx.db, box=app_ctx.box, redis=dead)
    transport = httpx.ASGITransport(app=create_app(settings, context=down))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://synchook") as offline:
            response = await offline.post("/v1/calendar/sync", headers=tenant.headers)
    finally:
        await dead.aclose()
    assert response.status_code == 202  # the job and its event are committed; the queue missed both
    job_id = response.json()["data"]["job_id"]
    assert await redis.zcard("synchook:queue") == 0
    (queued,) = await job_events(app_ctx, job_id)
    assert queued.dispatched_at is None

    assert await sweep(app_ctx) == 1
    assert (await job_events(app_ctx, job_id))[0].dispatched_at is not None
    assert await sweep(app_ctx) == 0  # exactly once

    # The job itself: recovered once it has been queued longer than the grace period.
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 0
    async with app_ctx.db.session() as session:
        await session.execute(
            update(SyncJob).where(col(SyncJob.id) == job_id).values(queued_at=utcnow() - timedelta(minutes=1))
        )
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 1
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 0  # arq's job-id dedup: not queued twice
    await run_worker()
    events = await job_events(app_ctx, job_id)
    assert [e.type for e in events][:2] == ["calendar.sync.queued", "calendar.sync.started"]
    assert len(events) == 3
    assert all(e.dispatched_at is not None for e in events)


async def test_redis_flushed_while_running_the_job_is_recovered_after_the_timeout(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, redis: ArqRedis, run_worker: RunWorker
) -> None:
    job_id = await trigger(client, tenant)
    async with app_ctx.db.session() as session:
        assert await service.start_job(session, job_id=job_id) is not None
    await redis.flushall()
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 0  # still within the job timeout
    async with app_ctx.db.session() as session:
        await session.execute(
            update(SyncJob)
            .where(col(SyncJob.id) == job_id)
            .values(started_at=utcnow() - timedelta(seconds=app_ctx.settings.sync_job_timeout + 1))
        )
    assert await tasks.recover_sync_jobs({"app": app_ctx}) == 1
    await run_worker()
    await sweep(app_ctx)
    events = await job_events(app_ctx, job_id)
    assert [e.type for e in events][:2] == ["calendar.sync.queued", "calendar.sync.started"]
    assert len(events) == 3
    assert all(e.dispatched_at is not None for e in events)


async def test_the_recovery_cron_is_registered(settings: Settings) -> None:
    from synchook.root.worker import cron_jobs

    names = {job.name for job in cron_jobs(settings)}
    assert "cron:recover_sync_jobs" in names


async def test_replayed_request_does_not_enqueue_twice(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, redis: ArqRedis
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
    for _ in range(3):
        assert (await client.post("/v1/calendar/sync", headers=headers)).status_code == 202
    queued = await redis.zrange("synchook:queue", 0, -1)
    run_jobs = [j for j in queued if j.decode().startswith("cal_sync_")]
    assert len(run_jobs) == 1
