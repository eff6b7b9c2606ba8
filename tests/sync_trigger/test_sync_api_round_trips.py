"""What POST /v1/calendar/sync and POST /v1/webhooks/subscriptions/{id}/test cost in round trips (issue 22 (e)).

Counted, not timed: the statements the API's database ran and the commands Redis received during one request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import greenlet
import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import event, func, select

from sync_trigger.models import SyncJob
from sync_trigger.schemas import SyncAccepted
from sync_trigger.service import RUN_SYNC_TASK, job_event_data
from synchook.context import AppContext
from synchook.enqueue import QueuedJob, enqueue_jobs
from synchook.outbox import RELAY_TASK, Event
from synchook.queue import QUEUE_NAME
from synchook.settings import Settings
from tests.factories import Tenant, make_tenant
from tests.factories.webhooks import make_subscription
from tests.support.deployed_api import api_as_deployed
from tests.support.hand_offs import counted_hand_offs
from tests.sync_trigger.test_sync_api import connect


@pytest.fixture
async def tenant(app_ctx: AppContext, client: httpx.AsyncClient) -> Tenant:
    made = await make_tenant(app_ctx)
    await connect(client, made, "google")
    return made


@pytest.fixture
def autocommit(app_ctx: AppContext) -> Iterator[list[bool]]:
    """For each statement the API's database runs, whether it ran in autocommit (no BEGIN and COMMIT around it)."""
    seen: list[bool] = []

    def record(conn: Any, *_args: Any) -> None:
        seen.append(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")

    engine = app_ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def driver_queries(app_ctx: AppContext) -> Iterator[list[str]]:
    """The statements run on the pool's asyncpg connections through asyncpg's own API (not SQLAlchemy's prepared
    statements, which asyncpg does not log): Database.driver_row's, and the BEGIN and COMMIT of transactions."""
    seen: list[str] = []
    watched: list[Any] = []

    def record(query: Any) -> None:
        seen.append(query.query)

    def watch(dbapi_connection: Any, *_args: Any) -> None:
        driver = dbapi_connection.driver_connection
        driver.add_query_logger(record)
        watched.append(driver)

    pool = app_ctx.db.engine.sync_engine.pool
    event.listen(pool, "checkout", watch)
    yield seen
    event.remove(pool, "checkout", watch)
    for driver in watched:
        driver.remove_query_logger(record)


async def command_calls(redis: ArqRedis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_an_accepted_sync_enqueues_its_event_and_its_job_in_one_command(
    app_ctx: AppContext, client: httpx.AsyncClient, redis: ArqRedis, tenant: Tenant
) -> None:
    await client.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
    await redis.config_resetstat()
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
    assert response.status_code == 202
    calls = await command_calls(redis)
    # Before: arq's enqueue_job twice (WATCH, EXISTS, MULTI, PSETEX, ZADD, EXEC each) after the rate limit's EVALSHA.
    assert calls.get("evalsha") == 2, calls
    assert "watch" not in calls and "multi" not in calls, calls
    job_id = response.json()["data"]["job_id"]
    queued = {job.job_id: job for job in await redis.queued_jobs(queue_name=QUEUE_NAME)}
    assert queued[job_id].function == RUN_SYNC_TASK and list(queued[job_id].args) == [job_id]
    async with app_ctx.db.session() as session:
        event_id = (await session.execute(select(Event.id).where(Event.type == "calendar.sync.queued"))).scalar_one()
    relays = [job for job in queued.values() if job.function == RELAY_TASK]
    assert [list(job.args) for job in relays] == [[[event_id]]]


async def test_an_accepted_sync_is_one_statement_in_autocommit_on_postgresql(
    database_url: str,
    app_ctx: AppContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    autocommit: list[bool],
    driver_queries: list[str],
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's sync_trigger_admit function")
    await client.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
    autocommit.clear()
    driver_queries.clear()
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
    assert response.status_code == 202
    # The lock, the admission and both inserts in one call, its own transaction: no BEGIN and COMMIT round trips.
    # Before: the lock, then the admission with the inserts, in a transaction (four round trips). The call runs on
    # asyncpg itself (Database.driver_row), where SQLAlchemy ran it in autocommit (seen as [True] by `autocommit`).
    assert autocommit == [], autocommit
    assert len(driver_queries) == 1 and "sync_trigger_admit(" in driver_queries[0], driver_queries
    async with app_ctx.db.session() as session:
        job = await session.get(SyncJob, response.json()["data"]["job_id"])
        assert job is not None and job.status == "queued" and job.attempts == 0
        events = (await session.execute(select(Event).where(Event.workspace_id == tenant.workspace_id))).scalars()
        (queued,) = list(events)
    assert queued.type == "calendar.sync.queued" and queued.data["job_id"] == job.id
    assert queued.data["queued_at"] == response.json()["data"]["queued_at"]


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    with counted_hand_offs(monkeypatch) as handed:
        yield handed


@pytest.mark.parametrize("body", [{"mode": "incremental"}, {"provider": "microsoft"}])
async def test_a_sync_request_on_sqlite_is_one_hand_off_to_the_drivers_thread(
    database_url: str, client: httpx.AsyncClient, tenant: Tenant, hand_offs: list[str], body: dict[str, str]
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's driver thread (PostgreSQL's call is one statement on asyncpg)")
    await client.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
    hand_offs.clear()
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=body)
    assert response.status_code == (202 if body.get("mode") else 403), response.text
    # BEGIN IMMEDIATE, the admission, the inserts (if admitted) and COMMIT in one call, under the write lock; then
    # the pool's reset at checkin, after the lock. Before: 15 for an accepted sync, 9 for a refused one (a cursor,
    # its execution, its rows and its close for BEGIN and each statement, COMMIT, the reset), all but the last
    # under the lock, each waiting for a turn of the API's loop.
    assert hand_offs == ["OneCall", "rollback"], hand_offs


@pytest.mark.parametrize("body", [{"mode": "incremental"}, {"mode": "full", "provider": "google"}])
async def test_an_accepted_syncs_rows_are_what_the_orm_object_describes(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, body: dict[str, str]
) -> None:
    # The request builds no SyncJob (a plain NewJob): its row and its event's data are still the lifecycle's own.
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=body)
    assert response.status_code == 202
    async with app_ctx.db.session() as session:
        job = await session.get(SyncJob, response.json()["data"]["job_id"])
        assert job is not None
        (queued,) = (await session.execute(select(Event).where(Event.workspace_id == tenant.workspace_id))).scalars()
    assert (job.trigger, job.status, job.attempts, job.connection_id, job.started_at) == (
        "api",
        "queued",
        0,
        None,
        None,
    )
    assert (queued.type, queued.provider, queued.target_subscription_id) == ("calendar.sync.queued", job.provider, None)
    assert queued.data == job_event_data(job)
    assert response.json()["data"] == SyncAccepted.of(job).model_dump(mode="json")


async def test_a_refused_sync_writes_nothing(
    app_ctx: AppContext, client: httpx.AsyncClient, settings_overrides: dict[str, Any]
) -> None:
    # No connection of the provider: the statement that would insert the job inserts nothing.
    tenant = await make_tenant(app_ctx)
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"provider": "microsoft"})
    assert response.status_code == 403
    async with app_ctx.db.session() as session:
        assert (await session.execute(select(func.count()).select_from(SyncJob))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Event))).scalar_one() == 0


async def test_a_test_event_is_handed_off_in_one_command(
    app_ctx: AppContext, client: httpx.AsyncClient, redis: ArqRedis, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}/test"
    await client.get(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers)  # the key looked up
    await redis.config_resetstat()
    response = await client.post(path, headers=tenant.headers)
    assert response.status_code == 202
    calls = await command_calls(redis)
    assert calls.get("evalsha") == 2, calls  # the rate limit, the hand-off
    assert "watch" not in calls and "multi" not in calls, calls
    queued = await redis.queued_jobs(queue_name=QUEUE_NAME)
    assert [list(job.args) for job in queued if job.function == RELAY_TASK] == [[[response.json()["data"]["event_id"]]]]


async def test_enqueue_jobs_skips_a_job_whose_id_is_taken(redis: ArqRedis) -> None:
    # As arq's enqueue_job with _job_id: a job of that id already queued (or its result kept) is not queued again.
    assert await redis.enqueue_job("first", 1, _job_id="taken", _queue_name=QUEUE_NAME) is not None
    done = await enqueue_jobs(redis, [QueuedJob("second", (2,), job_id="taken"), QueuedJob("third", ([3],))])
    assert done == [False, True]
    queued = {job.function: job for job in await redis.queued_jobs(queue_name=QUEUE_NAME)}
    assert set(queued) == {"first", "third"}
    assert list(queued["third"].args) == [[3]]
    assert queued["first"].job_id == "taken"


async def test_an_accepted_sync_and_a_test_event_run_their_statements_without_an_orm_session(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, orm_executes: list[str]
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    await client.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
    orm_executes.clear()
    synced = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
    tested = await client.post(f"/v1/webhooks/subscriptions/{sub.id}/test", headers=tenant.headers)
    assert (synced.status_code, tested.status_code) == (202, 202)
    # Core statements on the unit of work's connection: no session set up, asked for its connection and closed.
    assert orm_executes == [], orm_executes


@contextlib.asynccontextmanager
async def _connected_api(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant, str, AppContext]]:
    """The API as deployed (tests.support.deployed_api), its tenant connected; the subscription's test path."""
    async with api_as_deployed(settings) as api:
        await connect(api.http, api.tenant, "google")
        yield api.http, api.tenant, api.subscription_path + "/test", api.ctx


@contextlib.contextmanager
def _tasks_started() -> Iterator[list[str]]:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    previous = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        module = coro.cr_frame.f_globals.get("__name__", "") if getattr(coro, "cr_frame", None) else ""
        started.append(f"{module}:{getattr(coro, '__qualname__', repr(coro))}")
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        yield started
    finally:
        loop.set_task_factory(previous)


async def test_the_post_routes_enqueue_on_the_apis_pipelined_connection(settings: Settings, redis: ArqRedis) -> None:
    async with _connected_api(settings) as (http, tenant, test_path, _ctx):
        await http.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
        await redis.config_resetstat()
        with _tasks_started() as started:
            synced = await http.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
            tested = await http.post(test_path, headers=tenant.headers)
    assert (synced.status_code, tested.status_code) == (202, 202)
    # The enqueue scripts went out on the rate limit's pipelined connection: no task of redis-py's. Before, its pool
    # ran each script's write in a task of its own (asyncio.wait_for, the client having a socket timeout). (SQLite's
    # unit of work starts tasks of its own: its lock, the session's close.)
    assert [name for name in started if not name.startswith(("sqlalchemy", "asyncio"))] == [], started
    calls = await command_calls(redis)
    assert calls.get("evalsha") == 4, calls  # per request: the rate limit, the enqueue
    queued = {job.job_id: job for job in await redis.queued_jobs(queue_name=QUEUE_NAME)}
    job_id = synced.json()["data"]["job_id"]
    assert queued[job_id].function == RUN_SYNC_TASK and list(queued[job_id].args) == [job_id]
    relayed = [list(job.args) for job in queued.values() if job.function == RELAY_TASK]
    assert [[tested.json()["data"]["event_id"]]] in relayed and len(relayed) == 2


async def test_the_enqueue_script_survives_a_script_flush_on_the_pipelined_connection(
    settings: Settings, redis: ArqRedis
) -> None:
    async with _connected_api(settings) as (http, tenant, test_path, _ctx):
        assert (await http.post(test_path, headers=tenant.headers)).status_code == 202
        await redis.script_flush()  # a Redis that lost its scripts (restarted, flushed) answers NOSCRIPT
        response = await http.post(test_path, headers=tenant.headers)
    assert response.status_code == 202
    queued = await redis.queued_jobs(queue_name=QUEUE_NAME)
    assert [[response.json()["data"]["event_id"]]] in [list(job.args) for job in queued if job.function == RELAY_TASK]


async def test_an_accepted_sync_is_kept_for_recovery_when_the_apis_redis_is_unreachable(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with _connected_api(unreachable) as (http, tenant, test_path, ctx):
        synced = await http.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
        tested = await http.post(test_path, headers=tenant.headers)
        assert (synced.status_code, tested.status_code) == (202, 202)
        # Committed and left for the recovery cron and the relay sweeper, as when arq's enqueue failed.
        async with ctx.db.session() as session:
            job = await session.get(SyncJob, synced.json()["data"]["job_id"])
            assert job is not None and job.status == "queued"
            event = await session.get(Event, tested.json()["data"]["event_id"])
            assert event is not None and event.dispatched_at is None


async def test_the_post_routes_cross_to_sqlalchemys_sync_side_once_on_postgresql(
    database_url: str, app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's autocommit statement (SQLite's is a unit of work)")
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    await client.get("/v1/calendar/connections", headers=tenant.headers)  # the key looked up: the cache's hit path
    answers: list[int] = []
    crossed: list[int] = []
    for method, path, body in (
        ("POST", "/v1/calendar/sync", {"mode": "incremental"}),
        ("POST", f"/v1/webhooks/subscriptions/{sub.id}/test", None),
    ):
        crossings: dict[int, None] = {}

        def trace(event_name: str, args: Any, crossings: dict[int, None] = crossings) -> None:
            if event_name in ("switch", "throw") and args[1].parent is not None:
                crossings.setdefault(id(args[1]))

        previous = greenlet.settrace(trace)
        try:
            answers.append((await client.request(method, path, headers=tenant.headers, json=body)).status_code)
        finally:
            greenlet.settrace(previous)
        crossed.append(len(crossings))
    assert answers == [202, 202]
    # Connect, execute and close in one greenlet (Database.driver_row, Database.write); main: three, one for each.
    assert crossed == [1, 1], crossed


async def test_a_test_event_builds_no_orm_object(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    built: list[str] = []

    def record(target: Any, *_args: Any) -> None:
        built.append(type(target).__name__)

    event.listen(Event, "init", record)
    try:
        response = await client.post(f"/v1/webhooks/subscriptions/{sub.id}/test", headers=tenant.headers)
    finally:
        event.remove(Event, "init", record)
    assert response.status_code == 202
    assert built == []  # before: an Event built to carry the row's values (4 % of the route's CPU)
    async with app_ctx.db.session() as session:
        recorded = await session.get(Event, response.json()["data"]["event_id"])
    assert recorded is not None
    assert (recorded.type, recorded.target_subscription_id, recorded.workspace_id) == (
        "webhook.test",
        sub.id,
        tenant.workspace_id,
    )
    assert recorded.data == {
        "workspace_id": tenant.workspace_id,
        "subscription_id": sub.id,
        "message": "This is a test event from Synchook.",
    }
