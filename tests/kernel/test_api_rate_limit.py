"""The per-key API limit counts through a Lua script run by its digest: a Redis that lost its scripts (restarted,
SCRIPT FLUSH) is sent the text once and the count goes on. It runs on connections of its own
(synchook.http.ratelimit.HitCounter): no task per request, and a connection Redis dropped is replaced, not
failed open."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from synchook.context import AppContext
from synchook.http.ratelimit import HitCounter, hit_api_limit
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.support.deployed_api import api_as_deployed


async def test_the_count_survives_a_script_flush(redis: ArqRedis) -> None:
    key_id = f"key_{uuid.uuid4().hex}"
    hits = HitCounter(redis)
    first = await hit_api_limit(hits, key_id=key_id, per_minute=10)
    await redis.script_flush()
    second = await hit_api_limit(hits, key_id=key_id, per_minute=10)
    await hits.close()
    if int(first.reset_at) != int(second.reset_at):
        return  # straddled a minute boundary: two windows
    assert (first.remaining, second.remaining) == (9, 8)
    name = f"synchook:ratelimit:api:{key_id}:{int(first.reset_at) // 60 - 1}"
    assert 0 < await redis.ttl(name) <= 120  # the window expires


async def test_a_request_with_a_known_key_starts_no_task(settings: Settings) -> None:
    async with api_as_deployed(settings) as (http, tenant, path, _ctx):
        first = await http.get(path, headers=tenant.headers)  # looks the key up
        loop = asyncio.get_running_loop()
        started: list[str] = []
        previous = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            started.append(getattr(coro, "__qualname__", repr(coro)))
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(counting)
        try:
            second = await http.get(path, headers=tenant.headers)
        finally:
            loop.set_task_factory(previous)
    assert first.status_code == second.status_code == 200
    # Counted and read in one round trip (the key was cached), no task: main's client ran the command's write in
    # a task of its own (asyncio.wait_for), on every API request.
    assert int(first.headers["X-RateLimit-Remaining"]) - int(second.headers["X-RateLimit-Remaining"]) == 1
    assert started == []


async def test_the_limit_still_counts_after_redis_dropped_the_apis_connections(
    settings: Settings, redis: ArqRedis
) -> None:
    async with api_as_deployed(settings) as (http, tenant, path, _ctx):
        first = await http.get(path, headers=tenant.headers)
        # What a Redis restart does to the connections the limiter keeps between requests.
        assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
        second = await http.get(path, headers=tenant.headers)
    assert first.status_code == second.status_code == 200
    # Counted on a new connection, not failed open (which answers the whole limit as remaining).
    assert int(first.headers["X-RateLimit-Remaining"]) - int(second.headers["X-RateLimit-Remaining"]) == 1


async def test_concurrent_requests_are_answered_while_redis_is_unreachable(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with api_as_deployed(unreachable) as (http, tenant, path, _ctx):
        answers = await asyncio.gather(*(http.get(path, headers=tenant.headers) for _ in range(5)))
    # The limiter fails open: every request is served, with the whole limit as remaining.
    limit = str(settings.api_requests_per_minute)
    assert [(a.status_code, a.headers["X-RateLimit-Remaining"]) for a in answers] == [(200, limit)] * 5


async def test_a_batch_whose_first_request_is_cancelled_is_still_sent(redis: ArqRedis) -> None:
    hits = HitCounter(redis)
    try:
        await hits.count(f"synchook:test:{uuid.uuid4().hex}")  # the connection is up
        first_name, second_name = f"synchook:test:{uuid.uuid4().hex}", f"synchook:test:{uuid.uuid4().hex}"
        first = asyncio.ensure_future(hits.count(first_name))
        second = asyncio.ensure_future(hits.count(second_name))
        await asyncio.sleep(0)  # both queued their command in one batch; the first waits to send it
        first.cancel()
        count, _ = await second  # before: never sent, until the timeout gave the connection up
        assert count == 1
        assert first.cancelled()
    finally:
        await hits.close()
    assert await redis.get(second_name) == b"1"


@pytest.mark.parametrize("settings_overrides", [{"api_requests_per_minute": 2}])
async def test_a_request_past_the_key_limit_has_each_rate_limit_header_once(
    app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    """The refusal's own headers (its error) and the middleware's (the request's limit state) are the same three
    names: a 429 carried each twice."""
    tenant = await make_tenant(app_ctx)
    for _ in range(2):
        assert (await client.get("/v1/webhooks/subscriptions", headers=tenant.headers)).status_code == 200
    refused = await client.get("/v1/webhooks/subscriptions", headers=tenant.headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"):
        assert len(refused.headers.get_list(name)) == 1, (name, refused.headers.get_list(name))
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-remaining"] == "0"
