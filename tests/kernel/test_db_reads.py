"""`Database.read()`: reads outside any transaction, and what POST /v1/calendar/sync's workspace lock blocks.

The API authenticates every request and answers its one-row GETs through `Database.read()`: on SQLite that
reads beside the one writer instead of queueing on its lock; on PostgreSQL it is one statement in autocommit.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from sync_trigger import service as sync_service
from sync_trigger.models import NewJob
from synchook.auth.cache import announce_revocation
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import record_event
from synchook.timeutil import utcnow
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription


async def test_an_api_read_answers_while_another_process_holds_the_sqlite_write_lock(
    database_url: str, app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's one writer")
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    # What a worker's transaction does to the file: the write lock, held while the API is asked.
    writer = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        response = await client.get(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    # Before: the key lookup and the handler each opened a write transaction and waited out busy_timeout (503).
    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == sub.id


async def test_a_revoked_key_is_refused_by_the_next_read(
    database_url: str, app_ctx: AppContext, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    path = f"/v1/webhooks/subscriptions/{sub.id}"
    assert (await client.get(path, headers=tenant.headers)).status_code == 200
    async with app_ctx.db.session() as session:
        await session.execute(text("UPDATE api_keys SET revoked_at = created_at WHERE id = :id"), {"id": tenant.key_id})
    # As `synchook keys revoke` does after its commit: the API's key cache (synchook.auth.cache) looks keys up again.
    assert app_ctx.redis is not None
    await announce_revocation(app_ctx.redis)
    assert (await client.get(path, headers=tenant.headers)).status_code == 401


async def test_a_sync_request_holding_the_workspace_lock_does_not_block_inserts_for_the_workspace(
    database_url: str, app_ctx: AppContext
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL row locks (SQLite serialises every writer)")
    tenant = await make_tenant(app_ctx)
    async with app_ctx.db.session() as holder:
        # A sync request's admission (sync_trigger_admit) takes the workspace lock until its transaction ends.
        await _admit_sync(holder, tenant.workspace_id)
        async with app_ctx.db.session() as other:
            # An insert referencing the workspace takes KEY SHARE on its row (the foreign key). FOR UPDATE blocked
            # it until the sync request committed (here: forever, so lock_timeout makes that an error).
            await other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            record_event(other, workspace_id=tenant.workspace_id, type="webhook.test", data={})
            await other.flush()


async def test_a_sync_request_waits_for_the_workspace_lock_of_another(database_url: str, app_ctx: AppContext) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL row locks (SQLite serialises every writer)")
    tenant = await make_tenant(app_ctx)
    async with app_ctx.db.session() as holder:
        await _admit_sync(holder, tenant.workspace_id)
        with pytest.raises(DBAPIError, match="lock timeout"):
            async with app_ctx.db.session() as other:
                await other.execute(text("SET LOCAL lock_timeout = '200ms'"))
                await _admit_sync(other, tenant.workspace_id)


async def _admit_sync(session: AsyncSession, workspace_id: str) -> None:
    now = utcnow()
    job = NewJob(
        id=new_id("cal_sync"),
        workspace_id=workspace_id,
        mode="incremental",
        provider=None,
        from_date=None,
        to_date=None,
        queued_at=now,
    )
    await sync_service._admit(await session.connection(), job, event_id=new_id("evt"), cap=6, now=now)
