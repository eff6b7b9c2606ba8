"""Claim: lease the due rows among a job's ids and load what sending them needs, in one transaction.

Queue jobs carry only delivery ids; the database row is the truth. A job claims the rows that are
open, due and not leased, so a duplicated or stale job does nothing; a job lost with Redis or with a
killed worker is made up for by the sweeper once the row is overdue and its lease has run out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from subscriptions.models import Subscription
from synchook.db import among, among_bound, unindexed
from synchook.outbox import Event
from synchook.timeutil import utcnow
from webhooks.delivery.lease import Lease
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.stages import Batch, Body, Claimed, Endpoint
from webhooks.models import OPEN_STATUSES, Delivery, DeliveryAttempt

__all__ = ["claim", "claim_rows", "load_subscriptions"]

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_attempts = DeliveryAttempt.__table__  # type: ignore[attr-defined]
_events = Event.__table__  # type: ignore[attr-defined]
_subscriptions = Subscription.__table__  # type: ignore[attr-defined]


async def claim(worker: WorkerContext, delivery_ids: Sequence[str]) -> Batch | None:
    """Lease the due deliveries among these ids and load their bodies and subscriptions; None if none is due."""
    app = worker.app
    now = utcnow()
    lease = Lease(now + timedelta(seconds=app.settings.delivery_lease_seconds), [])
    ids = list(dict.fromkeys(delivery_ids))
    async with app.db.session() as session:
        # Two statements, also on PostgreSQL: one that claimed and returned the bodies (the update as a CTE joined
        # to the events) was measured slower there, 3,337-3,378 against 3,514-3,888 deliveries/s in (a).
        claimed = await claim_rows(session, ids, now=now, lease=lease)
        if not claimed:
            return None
        bodies = await _load_bodies(session, {c.event_id for c in claimed})
        lease.ids = [c.id for c in claimed]
        subscriptions = await load_subscriptions(session, {c.subscription_id for c in claimed})
    return Batch(lease=lease, claimed=claimed, bodies=bodies, subscriptions=subscriptions, now=now)


def _claim_update(*, postgres: bool) -> sa.Update:
    """Lease the open, due, unleased rows among ``:ids`` to ``:until``/``:owner``, returning what a ``Claimed`` is
    made of. Built once per database kind, values bound at execution: SQLAlchemy builds a statement's cache key
    once per statement object, and building this one and its key for every claim cost ~0.6 ms of worker CPU."""
    # The ids pick the rows, by primary key: the due index would read every open row. One array on PostgreSQL
    # (one SQL text, prepared once: see synchook.db.among), an expanding IN list on SQLite.
    ids = (
        _deliveries.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(_deliveries.c.id.type)))
        if postgres
        else _deliveries.c.id.in_(sa.bindparam("ids", expanding=True))
    )
    due = unindexed(_deliveries.c.next_attempt_at)
    now = sa.bindparam("now", type_=_deliveries.c.next_attempt_at.type)
    return (
        sa.update(_deliveries)
        .where(
            ids,
            unindexed(_deliveries.c.status).in_(OPEN_STATUSES),
            sa.or_(due.is_(None), due <= now),
            sa.or_(_deliveries.c.lease_until.is_(None), _deliveries.c.lease_until < now),
        )
        .values(
            lease_until=sa.bindparam("until", type_=_deliveries.c.lease_until.type),
            lease_owner=sa.bindparam("owner", type_=_deliveries.c.lease_owner.type),
        )
        .returning(*(_deliveries.c[name] for name in _CLAIMED_COLUMNS))
    )


def _claim_values(ids: list[str], now: datetime, lease: Lease) -> dict[str, Any]:
    return {"ids": ids, "now": now, "until": lease.until, "owner": lease.owner}


# The delivery columns a claim returns, in the order of Claimed's fields (its number is worked out after).
_CLAIMED_COLUMNS = (
    "id",
    "workspace_id",
    "event_id",
    "subscription_id",
    "status",
    "attempt_count",
    "replays",
    "last_status_code",
    "last_error",
)


async def claim_rows(session: AsyncSession, ids: list[str], *, now: datetime, lease: Lease) -> list[Claimed]:
    """Lease the open, due, unleased rows among ``ids`` to ``lease``; sorted by id, each numbered."""
    postgres = (await session.connection()).dialect.name == "postgresql"
    statement = _CLAIM_POSTGRES if postgres else _CLAIM_SQLITE
    result = await session.execute(statement, _claim_values(ids, now, lease))
    return await _numbered(session, result.all())


_CLAIM_POSTGRES = _claim_update(postgres=True)
_CLAIM_SQLITE = _claim_update(postgres=False)


async def _numbered(session: AsyncSession, found: Sequence[Any]) -> list[Claimed]:
    rows: list[Any] = sorted(found, key=lambda r: r[0])
    last = await _last_numbers(session, [r[0] for r in rows if r[6] > 0])
    # Without a replay the sequence is the whole life, so the count gives the number; replays continue it.
    return [
        Claimed(id_, workspace_id, event_id, sub_id, status, count, replays, code, error, last.get(id_, count) + 1)
        for id_, workspace_id, event_id, sub_id, status, count, replays, code, error in rows
    ]


async def _last_numbers(session: AsyncSession, replayed: list[str]) -> dict[str, int]:
    if not replayed:
        return {}
    rows = await session.execute(
        sa.select(_attempts.c.delivery_id, sa.func.max(_attempts.c.number))
        .where(among(_attempts.c.delivery_id, replayed))
        .group_by(_attempts.c.delivery_id)
    )
    return {r[0]: int(r[1] or 0) for r in rows}


async def _load_bodies(session: AsyncSession, event_ids: Iterable[str]) -> dict[str, Body]:
    statement = _BODIES[await _is_postgres(session)]
    rows = await session.execute(statement, {"ids": sorted(event_ids)})
    return {row[0]: Body.of(*row) for row in rows}


async def _is_postgres(session: AsyncSession) -> bool:
    return (await session.connection()).dialect.name == "postgresql"


# Built once per database kind, as the claim is (see _claim_update): for SQLite, then PostgreSQL.
_BODIES = tuple(
    sa.select(_events.c.id, _events.c.workspace_id, _events.c.type, _events.c.created_at, _events.c.data).where(
        among_bound(_events.c.id, "ids", postgres=postgres)
    )
    for postgres in (False, True)
)
_SUBSCRIPTION_ROWS = tuple(
    sa.select(*(_subscriptions.c[name] for name in Endpoint._fields)).where(
        among_bound(_subscriptions.c.id, "ids", postgres=postgres)
    )
    for postgres in (False, True)
)


async def load_subscriptions(session: AsyncSession, ids: Iterable[str]) -> dict[str, Endpoint]:
    """The subscriptions as they are now, one statement: a change by any path (API, auto-disable, reseal) is seen
    at the next claim."""
    rows = await session.execute(_SUBSCRIPTION_ROWS[await _is_postgres(session)], {"ids": sorted(ids)})
    return {row[0]: Endpoint(*row) for row in rows}
