"""The API's key cache (synchook.auth.cache): a key is looked up once, and a revocation still refuses it at once.

A key found valid is used again without a database lookup for up to KEY_CACHE_SECONDS, only while the revocation
epoch in Redis (read in the same command as the rate-limit hit) is the one read before its lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import event, text

from synchook.auth import cache as key_cache
from synchook.auth import service as auth_service
from synchook.auth.service import revoke
from synchook.context import AppContext
from synchook.timeutil import utcnow
from tests.factories import Tenant, make_tenant
from tests.factories.webhooks import make_subscription


@pytest.fixture
def key_lookups(app_ctx: AppContext) -> Iterator[list[str]]:
    """Statements reading api_keys that the app's database ran (every engine: SQLite's readers are their own)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM api_keys" in statement:
            seen.append(statement)

    engines = [app_ctx.db.engine.sync_engine]
    reader = app_ctx.db._reader.sync_engine
    if reader.pool is not engines[0].pool:  # PostgreSQL reads through the same engine (its events reach both)
        engines.append(reader)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    yield seen
    for engine in engines:
        event.remove(engine, "before_cursor_execute", record)


async def _get(client: httpx.AsyncClient, tenant: Tenant, path: str) -> httpx.Response:
    return await client.get(path, headers=tenant.headers)


async def test_a_key_used_again_at_once_is_not_looked_up_again(
    app_ctx: AppContext, client: httpx.AsyncClient, key_lookups: list[str]
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    first = await _get(client, tenant, path)
    second = await _get(client, tenant, path)
    assert first.status_code == second.status_code == 200
    # Before: one api_keys lookup per request.
    assert len(key_lookups) == 1
    # The rate limit still counts every request.
    assert int(first.headers["X-RateLimit-Remaining"]) - int(second.headers["X-RateLimit-Remaining"]) == 1


async def test_a_key_revoked_and_announced_is_refused_by_the_next_request(
    app_ctx: AppContext, client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    tenant = await make_tenant(app_ctx)
    other = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    other_sub = await make_subscription(app_ctx, other.workspace_id, url="https://example.com/hook")
    path, other_path = f"/v1/webhooks/subscriptions/{sub.id}", f"/v1/webhooks/subscriptions/{other_sub.id}"
    assert (await _get(client, tenant, path)).status_code == 200
    assert (await _get(client, other, other_path)).status_code == 200
    done = await revoke(app_ctx.db, redis, key_id=tenant.key_id)  # what `synchook keys revoke` does
    assert done.newly and done.announced
    refused = await _get(client, tenant, path)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_key"
    assert "X-RateLimit-Limit" not in refused.headers
    assert (await _get(client, other, other_path)).status_code == 200  # looked up again, still valid


async def test_a_revocation_announced_after_redis_lost_the_epoch_still_refuses(
    app_ctx: AppContext, client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    await key_cache.announce_revocation(redis)
    assert (await _get(client, tenant, path)).status_code == 200  # cached under the announced epoch
    await redis.delete(key_cache.EPOCH_KEY)  # a restarted or flushed Redis
    assert (await _get(client, tenant, path)).status_code == 200  # looked up again, cached under "no epoch"
    await revoke(app_ctx.db, redis, key_id=tenant.key_id)  # announces a new random epoch, never one seen before
    assert (await _get(client, tenant, path)).status_code == 401


async def test_a_revocation_never_announced_is_refused_once_the_entry_is_old(
    app_ctx: AppContext, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    assert (await _get(client, tenant, path)).status_code == 200
    # Revoked by hand in the database: nothing tells Redis.
    async with app_ctx.db.session() as session:
        await session.execute(text("UPDATE api_keys SET revoked_at = created_at WHERE id = :id"), {"id": tenant.key_id})
    assert (await _get(client, tenant, path)).status_code == 200  # the bound: at most KEY_CACHE_SECONDS
    now = key_cache.time.monotonic()
    monkeypatch.setattr(key_cache.time, "monotonic", lambda: now + key_cache.KEY_CACHE_SECONDS)
    assert (await _get(client, tenant, path)).status_code == 401


async def test_an_expired_key_is_refused_even_when_cached(
    app_ctx: AppContext, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(app_ctx, expires_in=timedelta(hours=1))
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    assert (await _get(client, tenant, path)).status_code == 200
    later = utcnow() + timedelta(hours=2)
    monkeypatch.setattr(key_cache, "utcnow", lambda: later)
    monkeypatch.setattr(auth_service, "utcnow", lambda: later)
    assert (await _get(client, tenant, path)).status_code == 401
