"""The push debounce across processes (CONTRACT §7): 2 `synchook api` + 2 `synchook worker` OS processes over one
PostgreSQL and one Redis. Notifications for one calendar, spread over both API processes, make one push job;
notifications arriving while that calendar's push sync runs (on either worker) make exactly one follow-up."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from synchook.crypto import SecretBox, generate_master_key
from synchook.fakes import FakeProviders
from synchook.queue import QUEUE_NAME, EmbeddedRedis
from synchook.settings import Settings
from synchook.timeutil import utcnow
from tests.support.cluster import Cluster, base_env
from tests.support.postgres import asyncpg_dsn
from tests.support.sync_harness import soon

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300), pytest.mark.xdist_group("heavy")]

ACCOUNT = "push@example.com"
SCOPES = "read:calendar,write:calendar"
# Wide enough that a batch of concurrent notifications always falls in one window, even on a loaded machine.
DEBOUNCE = "2"
DEADLINE = 120.0


@dataclass
class Running:
    cluster: Cluster
    redis_url: str
    secret_key: str


@pytest.fixture
def running(database: str, fake: FakeProviders, tmp_path: Path) -> Iterator[Running]:
    secret_key = generate_master_key()
    with EmbeddedRedis() as redis:
        env = base_env(
            SYNCHOOK_DATABASE_URL=database,
            SYNCHOOK_REDIS_URL=redis.url,
            SYNCHOOK_SECRET_KEY=secret_key,
            SYNCHOOK_LOG_FORMAT="json",
            SYNCHOOK_BACKGROUND_SYNC_INTERVAL="0",
            SYNCHOOK_SYNC_JOB_TIMEOUT="120",
            SYNCHOOK_PUSH_DEBOUNCE=DEBOUNCE,
            **fake.settings_env(),
        )
        with Cluster(env, workdir=tmp_path / "cluster") as cluster:
            yield Running(cluster, redis.url, secret_key)


async def fetch(database: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def wait_for(check: Callable[[], Awaitable[bool]], *, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE}s: {what}\n{cluster.logs()}")
        await asyncio.sleep(0.2)


async def add_channel(database: str, secret_key: str, calendar: asyncpg.Record) -> tuple[str, str]:
    """The calendar's Google channel, as the channel side stores it: (channel id, token)."""
    box = SecretBox(Settings(secret_key=secret_key).secret_keys())
    channel_id, token = str(uuid.uuid4()), uuid.uuid4().hex
    now = utcnow()
    conn = await asyncpg.connect(asyncpg_dsn(database))
    try:
        await conn.execute(
            "INSERT INTO calendar_push_channels (calendar_id, workspace_id, connection_id, provider, status, "
            "channel_id, resource_id, secret_sealed, expires_at, renew_at, failures, created_at, updated_at) "
            "VALUES ($1, $2, $3, 'google', 'active', $4, 'res-1', $5, $6, $7, 0, $8, $8)",
            calendar["id"], calendar["workspace_id"], calendar["connection_id"], channel_id,
            box.seal(token, context=calendar["id"]), now + timedelta(days=7), now + timedelta(days=6), now,
        )  # fmt: skip
    finally:
        await conn.close()
    return channel_id, token


async def test_two_apis_and_two_workers_agree_on_one_push_job_and_one_follow_up(
    running: Running, database: str, fake: FakeProviders
) -> None:
    cluster = running.cluster
    cluster.cli("migrate")
    workspace = cluster.create_workspace("push-ws")
    headers = {"Authorization": f"Bearer {cluster.create_key('push-ws', SCOPES)}"}
    account = fake.add_account("google", ACCOUNT, calendars=2)
    apis = [cluster.start_api("api-1"), cluster.start_api("api-2")]
    for n in (1, 2):
        cluster.start_worker(f"worker-{n}")
    redis = Redis.from_url(running.redis_url)

    async def push_jobs() -> list[asyncpg.Record]:
        return await fetch(
            database, "SELECT id, status, calendar_id FROM sync_jobs WHERE \"trigger\" = 'push' ORDER BY queued_at"
        )

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(keepalive_expiry=2.0)) as http:
        response = await http.post(
            f"{apis[0].url}/v1/calendar/connections",
            headers=headers,
            json={"provider": "google", "account": ACCOUNT, "access_token": account.access_token,
                  "refresh_token": account.refresh_token},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        first = (await http.post(f"{apis[1].url}/v1/calendar/sync", headers=headers, json={})).json()["data"]

        async def first_sync_done() -> bool:
            job = (await http.get(f"{apis[0].url}/v1/calendar/sync/{first['job_id']}", headers=headers)).json()
            return bool(job["data"]["status"] == "completed")

        await wait_for(first_sync_done, what="the first sync", cluster=cluster)
        [calendar] = await fetch(
            database,
            "SELECT id, workspace_id, connection_id FROM calendar_index_calendars WHERE calendar_id = $1",
            ACCOUNT,
        )
        assert calendar["workspace_id"] == workspace
        channel_id, token = await add_channel(database, running.secret_key, calendar)
        notification = {
            "X-Goog-Channel-ID": channel_id,
            "X-Goog-Channel-Token": token,
            "X-Goog-Resource-State": "exists",
            "X-Goog-Resource-ID": "res-1",
        }

        async def notify(count: int) -> None:
            answers = await asyncio.gather(
                *(
                    http.post(f"{apis[n % 2].url}/v1/providers/google/notifications", headers=notification)
                    for n in range(count)
                )
            )
            assert [a.status_code for a in answers] == [200] * count, [a.text for a in answers]

        async def settled() -> bool:
            # No push sync wanted nor pending, and every push job ended: nothing more can come of what was sent.
            pending = [j for j in await redis.zrange(QUEUE_NAME, 0, -1) if j.startswith(b"push_sync:")]
            jobs = await push_jobs()
            wanted = await redis.exists(f"synchook:push:wanted:{calendar['id']}")
            return not pending and not wanted and all(j["status"] in ("completed", "failed") for j in jobs)

        # 1. Twenty notifications through both API processes within the window: one push job.
        fake.put_event("google", ACCOUNT, ACCOUNT, summary="First", start=soon())
        await notify(20)
        await wait_for(lambda: _has_jobs(push_jobs, 1), what="the push job", cluster=cluster)
        await wait_for(settled, what="the push sync settled", cluster=cluster)
        jobs = await push_jobs()
        assert [(j["status"], j["calendar_id"]) for j in jobs] == [("completed", calendar["id"])]

        # 2. A slow provider keeps the next push sync running while more notifications arrive: one follow-up.
        fake.latency = 3.0
        fake.put_event("google", ACCOUNT, ACCOUNT, summary="Second", start=soon(2))
        await notify(4)

        async def second_running() -> bool:
            return any(j["status"] == "running" for j in (await push_jobs())[1:])

        await wait_for(second_running, what="the second push job running", cluster=cluster)
        fake.put_event("google", ACCOUNT, ACCOUNT, summary="Third", start=soon(3))
        await notify(10)
        await wait_for(lambda: _has_jobs(push_jobs, 3), what="the follow-up push job", cluster=cluster)
        fake.latency = 0.0
        await wait_for(settled, what="the follow-up settled", cluster=cluster)
        jobs = await push_jobs()
        assert [j["status"] for j in jobs] == ["completed"] * 3, cluster.logs()
        summaries = {r["summary"] for r in await fetch(database, "SELECT summary FROM calendar_events")}
        assert {"First", "Second", "Third"} <= summaries
    await redis.aclose()


async def _has_jobs(push_jobs: Callable[[], Awaitable[list[asyncpg.Record]]], count: int) -> bool:
    return len(await push_jobs()) >= count
