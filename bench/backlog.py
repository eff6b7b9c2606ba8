"""(c)'s backlog: pending deliveries as fan-out leaves them (event-major), written by the database itself.

The events come from Python (a few thousand rows); their deliveries are one ``INSERT … SELECT`` per chunk over
events × subscriptions, numbered in the statement. Building and binding a million 17-column rows in Python took
34 s of a `make bench` that must stay under ten minutes; the statement form takes about half of that (the rest
is the database maintaining the table's indexes, as it does for fan-out).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bench.driver import Tenant
from subscriptions.models import Subscription
from synchook.bulk import insert_rows
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import Event
from synchook.timeutil import utcnow
from tests.factories.webhooks import sync_data
from webhooks.models import Delivery

__all__ = ["insert_backlog"]

EVENTS = Event.__table__  # type: ignore[attr-defined]
DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
SUBSCRIPTIONS = Subscription.__table__  # type: ignore[attr-defined]
EVENT_TYPE = "calendar.sync.completed"
# Deliveries per transaction, as a fan-out of this size would write them.
CHUNK_ROWS = 20_000
# The columns the statement sets; the others (lease, last outcome, cancel reason, completion) start NULL.
COLUMNS = (
    "id",
    "workspace_id",
    "event_id",
    "event_type",
    "subscription_id",
    "status",
    "attempt_count",
    "next_attempt_at",
    "replays",
    "created_at",
    "updated_at",
)


async def insert_backlog(ctx: AppContext, tenant: Tenant, count: int) -> list[str]:
    """``count`` pending deliveries of ``tenant``, due now; returns their ids in the order fan-out makes them."""
    subs = tenant.subscription_ids
    data = sync_data(tenant.workspace_id)
    # 'dlv_' and the first 16 characters of a fresh ULID (its time and some randomness), then a 10-digit counter:
    # well-formed ids, unique, and later than any made before, as real ones would be.
    prefix = new_id("dlv")[:-10]
    per_chunk = max(1, CHUNK_ROWS // len(subs))
    made = 0
    while made < count:
        now = utcnow()
        n_events = min(per_chunk, -(-(count - made) // len(subs)))
        event_ids = [new_id("evt") for _ in range(n_events)]
        events = [
            {
                "id": event_id,
                "workspace_id": tenant.workspace_id,
                "type": EVENT_TYPE,
                "provider": "google",
                "target_subscription_id": None,
                "data": data,
                "created_at": now,
                "dispatched_at": now,
            }
            for event_id in event_ids
        ]
        rows = min(count - made, n_events * len(subs))
        async with ctx.db.session() as session:
            dialect = (await session.connection()).dialect.name
            await insert_rows(session, EVENTS, events)
            deliveries = _deliveries(dialect, tenant.workspace_id, event_ids, subs, prefix, made, rows, now)
            await session.execute(sa.insert(DELIVERIES).from_select(COLUMNS, deliveries))
        made += rows
    async with ctx.db.session() as session:
        ids = await session.scalars(
            sa.select(DELIVERIES.c.id)
            .where(DELIVERIES.c.workspace_id == tenant.workspace_id, DELIVERIES.c.id.startswith(prefix))
            .order_by(DELIVERIES.c.id)
        )
        return list(ids)


def _deliveries(
    dialect: str,
    workspace_id: str,
    event_ids: list[str],
    subscription_ids: list[str],
    prefix: str,
    made: int,
    rows: int,
    now: datetime,
) -> sa.Select[Any]:
    """The first ``rows`` of events × subscriptions as delivery rows (``COLUMNS``), numbered on from ``made``."""
    event, sub = EVENTS.alias("e"), SUBSCRIPTIONS.alias("s")
    number = sa.func.row_number().over(order_by=(event.c.id, sub.c.id)) + made
    if dialect == "postgresql":
        counter = sa.func.lpad(sa.cast(number, sa.Text), 10, "0")
    else:
        counter = sa.func.printf("%010d", number)
    at = sa.literal(now, DELIVERIES.c.created_at.type)
    return (
        sa.select(
            sa.literal(prefix) + counter,
            sa.literal(workspace_id),
            event.c.id,
            sa.literal(EVENT_TYPE),
            sub.c.id,
            sa.literal("pending"),
            sa.literal(0),
            at,
            sa.literal(0),
            at,
            at,
        )
        # Every event with every subscription: the product is meant, said so (SQLAlchemy warns of a bare one).
        .select_from(event.join(sub, sa.true()))
        .where(event.c.id.in_(event_ids), sub.c.id.in_(subscription_ids))
        .order_by(event.c.id, sub.c.id)
        .limit(rows)
    )
