from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from synchook.context import AppContext
from synchook.idempotency import IdempotencyRecord, purge_expired_task
from synchook.root.worker import cron_jobs
from synchook.timeutil import utcnow


async def test_expired_keys_are_purged_and_live_ones_kept(app_ctx: AppContext) -> None:
    now = utcnow()
    async with app_ctx.db.session() as session:
        for key, age in (("old", timedelta(hours=25)), ("live", timedelta(hours=1))):
            session.add(
                IdempotencyRecord(workspace_id="ws", scope="sync", key=key, request_hash="h", created_at=now - age)
            )
    assert await purge_expired_task({"app": app_ctx}) == 1
    async with app_ctx.db.session() as session:
        keys = (await session.execute(select(IdempotencyRecord.key))).scalars().all()
    assert keys == ["live"]


def test_the_purge_is_scheduled(app_ctx: AppContext) -> None:
    assert "purge_expired_task" in {job.name.rsplit(":", 1)[-1] for job in cron_jobs(app_ctx.settings)}
