"""A sync against an unreachable provider shows its retries in GET /v1/calendar/sync/{id}, then fails clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from sync_trigger.connectors import ProviderError, RetryNotice
from sync_trigger.connectors.throttle import Backoff
from sync_trigger.models import SyncJob
from synchook.context import AppContext
from synchook.queue import free_port
from synchook.timeutil import parse_datetime, utcnow
from tests.factories import Tenant, make_tenant

# arq's Worker.close() calls redis-py's deprecated close() (conftest's make_worker closes every worker).
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

MakeWorker = Callable[..., Worker]
# Nothing listens there: every request is refused at once, as by a provider that is down.
CLOSED_PORT = free_port()
# Retries wait ~0.5-1, 1-2, 2-4, 4-8 s (throttle.backoff_delay) until the next would pass this bound.
MAX_WAIT = 8.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "google_api_url": f"http://127.0.0.1:{CLOSED_PORT}",
        "google_token_url": f"http://127.0.0.1:{CLOSED_PORT}/token",
        "max_throttle_wait": MAX_WAIT,
    }


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


async def retry_attempt(ctx: AppContext, job_id: str) -> int:
    async with ctx.db.session() as session:
        job = await session.get(SyncJob, job_id, populate_existing=True)
        assert job is not None
        return job.retry_attempt or 0


async def test_a_retrying_job_shows_its_attempt_and_next_try_then_fails_clearly(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant, make_worker: MakeWorker
) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={})
    job_id = response.json()["data"]["job_id"]
    url = f"/v1/calendar/sync/{job_id}"
    assert (await client.get(url, headers=tenant.headers)).json()["data"]["retry"] is None  # queued

    worker = asyncio.create_task(make_worker().main())
    # Until the third retry is scheduled: its wait (2-4 s) leaves the GET below ample time to see it pending.
    seen = 0

    async def poll() -> None:
        nonlocal seen
        while seen < 4:
            seen = await retry_attempt(app_ctx, job_id)
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout=60)
    before = utcnow()
    data = (await client.get(url, headers=tenant.headers)).json()["data"]
    assert data["status"] == "running"
    retry = data["retry"]
    assert retry is not None and set(retry) == {"attempt", "next_attempt_at", "last_error"}
    assert retry["attempt"] >= 4
    assert parse_datetime(retry["next_attempt_at"]) > before
    assert retry["last_error"]["code"] == "provider_error"
    assert f"cannot connect to 127.0.0.1:{CLOSED_PORT}" in retry["last_error"]["message"]

    await asyncio.wait_for(worker, timeout=60)
    data = (await client.get(url, headers=tenant.headers)).json()["data"]
    assert data["status"] == "failed"
    assert data["retry"] is None
    assert data["error"] == {
        "code": "provider_error",
        "message": f"google unreachable (cannot connect to 127.0.0.1:{CLOSED_PORT}); "
        f"gave up after retrying for {MAX_WAIT:g} s",
    }


async def test_each_retry_is_announced_and_a_recovery_clears_it() -> None:
    heard: list[RetryNotice | None] = []
    waited: list[float] = []

    async def hear(notice: RetryNotice | None) -> None:
        heard.append(notice)

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    backoff = Backoff(100.0, sleep, hear)
    await backoff.recovered()  # no retry yet: nothing to clear
    assert heard == []
    refused = ProviderError("google unreachable (cannot connect to 127.0.0.1:9)")
    await backoff.wait(None, ProviderError("gave up"), cause=refused)
    await backoff.wait(3.0, ProviderError("gave up"))
    await backoff.recovered()
    first, second, cleared = heard
    assert first is not None and (first.attempt, first.delay, first.error) == (2, waited[0], refused)
    assert second is not None and (second.attempt, second.delay, second.error.message) == (3, 3.0, "gave up")
    assert cleared is None
