"""Helpers for sync tests against the fake providers: connections holding the fake's tokens, jobs, the index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from sync_trigger import connections, runner
from sync_trigger.calendar_index.models import Calendar, CalendarEvent
from sync_trigger.models import Connection, SyncJob
from sync_trigger.schemas import OAuthConnectionBody
from synchook.context import AppContext
from synchook.fakes import FakeProviders
from synchook.ids import new_id
from synchook.outbox import hand_off
from synchook.timeutil import utcnow

ALICE = "alice@example.com"


def provider_settings(fake: FakeProviders, **extra: Any) -> dict[str, Any]:
    """settings_overrides pointing the connectors at the fakes."""
    return {**fake.endpoint_kwargs(), "max_throttle_wait": 10.0, **extra}


def soon(hours: float = 24) -> datetime:
    """A time inside the default sync window (now-90 d .. now+180 d)."""
    return (utcnow() + timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


@dataclass
class SyncHarness:
    ctx: AppContext
    fake: FakeProviders
    workspace_id: str

    async def connect(self, provider: str, account: str = ALICE, *, expires_at: datetime | None = None) -> Connection:
        acc = self.fake.account(provider, account)
        body = OAuthConnectionBody(
            provider=provider,  # type: ignore[arg-type]
            account=account,
            access_token=acc.access_token,
            refresh_token=acc.refresh_token,
            expires_at=expires_at,
        )
        async with self.ctx.db.session() as session:
            return await connections.create_connection(
                session, box=self.ctx.box, workspace_id=self.workspace_id, body=body
            )

    async def job(
        self,
        *,
        mode: str = "incremental",
        provider: str | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
    ) -> SyncJob:
        job = SyncJob(
            id=new_id("cal_sync"),
            workspace_id=self.workspace_id,
            mode=mode,
            provider=provider,
            from_date=from_date,
            to_date=to_date,
            status="running",
            queued_at=utcnow(),
            started_at=utcnow(),
        )
        async with self.ctx.db.session() as session:
            session.add(job)
        return job

    async def run(self, **job_fields: Any) -> runner.SyncStats:
        """run_sync over the workspace's active connections, then its change events to the queue, as the
        lifecycle task does."""
        job = await self.job(**job_fields)
        try:
            stats = await runner.run_sync(self.ctx, job, await self.active_connections())
        except runner.SyncFailure as failure:
            await hand_off(self.ctx.enqueue if self.ctx.redis is not None else None, failure.stats.event_ids)
            raise
        await hand_off(self.ctx.enqueue if self.ctx.redis is not None else None, stats.event_ids)
        return stats

    async def active_connections(self) -> list[Connection]:
        async with self.ctx.db.session() as session:
            rows = await session.execute(
                select(Connection)
                .where(col(Connection.workspace_id) == self.workspace_id, col(Connection.status) == "active")
                .order_by(col(Connection.id))
            )
            return list(rows.scalars())

    async def connection(self, connection_id: str) -> Connection:
        async with self.ctx.db.session() as session:
            found = await session.get(Connection, connection_id)
            assert found is not None
            return found

    async def events(self) -> dict[str, CalendarEvent]:
        """The workspace's indexed events by provider event id."""
        async with self.ctx.db.session() as session:
            rows = await session.execute(
                select(CalendarEvent).where(col(CalendarEvent.workspace_id) == self.workspace_id)
            )
            return {e.event_id: e for e in rows.scalars()}

    async def calendars(self) -> dict[str, Calendar]:
        async with self.ctx.db.session() as session:
            rows = await session.execute(select(Calendar).where(col(Calendar.workspace_id) == self.workspace_id))
            return {c.calendar_id: c for c in rows.scalars()}


def stats(calendars: int = 1, created: int = 0, updated: int = 0, deleted: int = 0) -> runner.SyncStats:
    return runner.SyncStats(calendars=calendars, events_created=created, events_updated=updated, events_deleted=deleted)
