"""Calendar changes (CONTRACT §6): written with the index in one transaction, numbered gap-free per workspace,
each with its calendar.event.* outbox event; repeats and duplicates are nothing."""

from __future__ import annotations

import asyncio
import json

import jsonschema_rs
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from subscriptions.catalogue import CATALOGUE
from sync_trigger.calendar_index import service
from sync_trigger.calendar_index.models import Calendar, CalendarChange, CalendarEvent
from sync_trigger.connectors import EventChange
from sync_trigger.models import Connection
from synchook.context import AppContext
from synchook.ids import new_id
from synchook.outbox import Event
from synchook.timeutil import isoformat
from tests.factories import Tenant, make_tenant
from tests.sync_trigger.test_calendar_index import T0, apply, change, connection_with_calendar

JOB = new_id("cal_sync")


@pytest.fixture
async def tenant(app_ctx: AppContext) -> Tenant:
    return await make_tenant(app_ctx)


@pytest.fixture
async def calendar(app_ctx: AppContext, tenant: Tenant) -> Calendar:
    return await connection_with_calendar(app_ctx, tenant)


async def feed(ctx: AppContext, workspace_id: str) -> list[CalendarChange]:
    async with ctx.db.session() as session:
        rows = await session.execute(
            select(CalendarChange)
            .where(col(CalendarChange.workspace_id) == workspace_id)
            .order_by(col(CalendarChange.sequence))
        )
        return list(rows.scalars())


async def change_events(ctx: AppContext, workspace_id: str) -> list[Event]:
    async with ctx.db.session() as session:
        rows = await session.execute(
            select(Event).where(col(Event.workspace_id) == workspace_id, col(Event.type).startswith("calendar.event."))
        )
        return sorted(rows.scalars(), key=lambda e: e.data["sequence"])


async def finish_round(ctx: AppContext, calendar: Calendar) -> None:
    await service.set_cursor(ctx.db, calendar=calendar, cursor="next")


async def test_created_updated_deleted_with_their_diff_and_events(app_ctx: AppContext, calendar: Calendar) -> None:
    counts = await apply(app_ctx, calendar, change("a"), job_id=JOB)
    assert counts == service.IndexCounts(created=1) and len(counts.event_ids) == 1
    await finish_round(app_ctx, calendar)
    await apply(app_ctx, calendar, change("a", summary="Renamed"))
    await apply(app_ctx, calendar, change("a", deleted=True))
    created, updated, deleted = await feed(app_ctx, calendar.workspace_id)
    assert [c.sequence for c in (created, updated, deleted)] == [1, 2, 3]
    assert [c.type for c in (created, updated, deleted)] == ["created", "updated", "deleted"]

    assert created.initial is True and created.previous is None and created.job_id == JOB
    event = created.event
    assert event["id"].startswith("cev_") and event["calendar_id"] == calendar.id
    assert event["connection_id"] == calendar.connection_id and event["provider"] == "google"
    assert event["provider_event_id"] == "a" and event["title"] == "Meeting"
    assert event["start"] == {"date_time": "2026-03-01T09:00:00.000Z", "date": None, "time_zone": None}
    assert created.changed_fields == [k for k, v in event.items() if v is not None]

    # A title-only edit is an update of ["title"] with the old title.
    assert updated.initial is False
    assert updated.changed_fields == ["title"] and updated.previous == {"title": "Meeting"}
    assert updated.event["title"] == "Renamed" and updated.event["id"] == event["id"]

    # A deletion carries the last known event, cancelled.
    assert deleted.changed_fields == [] and deleted.event["status"] == "cancelled"
    assert deleted.event["title"] == "Renamed"

    events = await change_events(app_ctx, calendar.workspace_id)
    assert [e.type for e in events] == ["calendar.event.created", "calendar.event.updated", "calendar.event.deleted"]
    for outbox, row in zip(events, (created, updated, deleted), strict=True):
        assert outbox.provider == "google"
        # The body conforms to the catalogue's JSON Schema of its type.
        body = {"id": outbox.id, "type": outbox.type, "timestamp": isoformat(outbox.created_at), "data": outbox.data}
        schema = next(t for t in CATALOGUE if t.name == outbox.type).schema()
        assert jsonschema_rs.validator_for(schema).is_valid(body), list(
            jsonschema_rs.validator_for(schema).iter_errors(body)
        )
        assert outbox.data == {
            "sequence": row.sequence,
            "workspace_id": calendar.workspace_id,
            "job_id": row.job_id,
            "connection_id": calendar.connection_id,
            "calendar_id": calendar.id,
            "provider": "google",
            "initial": row.initial,
            "event": row.event,
            "changed_fields": row.changed_fields,
            "previous": row.previous,
        }


async def test_unchanged_repeat_and_bare_updated_at_are_nothing(app_ctx: AppContext, calendar: Calendar) -> None:
    await apply(app_ctx, calendar, change("a"))
    assert await apply(app_ctx, calendar, change("a")) == service.IndexCounts()
    # The provider bumped `updated` (and the raw item) without changing content: no change either.
    bumped = change("a")
    bumped.updated = T0.replace(hour=12)
    bumped.raw["etag"] = "2"
    counts = await apply(app_ctx, calendar, bumped)
    assert counts == service.IndexCounts() and counts.event_ids == []
    assert [c.type for c in await feed(app_ctx, calendar.workspace_id)] == ["created"]
    assert len(await change_events(app_ctx, calendar.workspace_id)) == 1


async def test_an_item_reported_twice_in_one_page_is_one_change(app_ctx: AppContext, calendar: Calendar) -> None:
    await apply(app_ctx, calendar, change("a"), change("a"))
    await apply(app_ctx, calendar, change("a", summary="x"), change("a", summary="x"), change("b"), change("b"))
    assert [(c.type, c.event["provider_event_id"]) for c in await feed(app_ctx, calendar.workspace_id)] == [
        ("created", "a"),
        ("updated", "a"),
        ("created", "b"),
    ]


async def test_full_round_sweep_deletes_what_the_provider_no_longer_has(
    app_ctx: AppContext, calendar: Calendar
) -> None:
    await apply(app_ctx, calendar, change("a"), change("b"), change("c"))
    await finish_round(app_ctx, calendar)
    # The full round after a 410: it reports a and c unchanged, b is gone.
    seen: set[str] = set()
    assert await apply(app_ctx, calendar, change("a"), change("c"), seen=seen) == service.IndexCounts()
    swept = await service.sweep_calendar(app_ctx.db, calendar=calendar, keep=seen, window=None, job_id="cal_sync_2")
    assert swept == service.IndexCounts(deleted=1) and len(swept.event_ids) == 1
    changes = await feed(app_ctx, calendar.workspace_id)
    assert [c.type for c in changes] == ["created"] * 3 + ["deleted"]
    gone = changes[-1]
    assert gone.event["provider_event_id"] == "b" and gone.event["status"] == "cancelled"
    assert gone.job_id == "cal_sync_2" and gone.sequence == 4


async def test_initial_only_until_the_first_round_completes(app_ctx: AppContext, calendar: Calendar) -> None:
    await apply(app_ctx, calendar, change("a"))
    await apply(app_ctx, calendar, change("b"), cursor="done")
    await apply(app_ctx, calendar, change("c"))
    assert [c.initial for c in await feed(app_ctx, calendar.workspace_id)] == [True, True, False]


async def test_a_calendar_gone_at_the_provider_deletes_its_events_as_changes(
    app_ctx: AppContext, calendar: Calendar
) -> None:
    await apply(app_ctx, calendar, change("a"), change("b"))
    async with app_ctx.db.session() as session:
        connection = await session.get(Connection, calendar.connection_id)
    assert connection is not None
    _, removed = await service.sync_calendars(app_ctx.db, connection=connection, calendars=[])
    assert removed == service.IndexCounts(deleted=2) and len(removed.event_ids) == 2
    assert [c.type for c in await feed(app_ctx, calendar.workspace_id)] == ["created", "created", "deleted", "deleted"]


async def test_sequences_are_per_workspace(app_ctx: AppContext, calendar: Calendar) -> None:
    other = await connection_with_calendar(app_ctx, await make_tenant(app_ctx))
    await apply(app_ctx, calendar, change("a"))
    await apply(app_ctx, other, change("a"), change("b"))
    await apply(app_ctx, calendar, change("b"))
    assert [c.sequence for c in await feed(app_ctx, calendar.workspace_id)] == [1, 2]
    assert [c.sequence for c in await feed(app_ctx, other.workspace_id)] == [1, 2]


async def test_concurrent_pages_of_one_workspace_take_gap_free_sequences(
    app_ctx: AppContext, calendar: Calendar, tenant: Tenant
) -> None:
    # Two calendars of one workspace (two connections), written by concurrent transactions.
    second = await connection_with_calendar(app_ctx, tenant)

    async def pages(target: Calendar, prefix: str) -> None:
        for page in range(6):
            batch = [change(f"{prefix}{page}-{n}", hours=n) for n in range(5)]
            await apply(app_ctx, target, *batch)

    await asyncio.gather(pages(calendar, "x"), pages(second, "y"), pages(calendar, "z"))
    changes = await feed(app_ctx, tenant.workspace_id)
    assert [c.sequence for c in changes] == list(range(1, 91))
    events = await change_events(app_ctx, tenant.workspace_id)
    assert [e.data["sequence"] for e in events] == list(range(1, 91))
    # Every indexed event has exactly its created change.
    async with app_ctx.db.session() as session:
        ids = set((await session.execute(select(col(CalendarEvent.id)))).scalars())
    assert {c.event_id for c in changes} >= ids and len(ids) == 90


async def test_an_unreadable_event_is_no_change(app_ctx: AppContext, calendar: Calendar) -> None:
    await apply(app_ctx, calendar, EventChange("cal-1", "junk", deleted=False, raw={"id": "junk"}))
    assert await feed(app_ctx, calendar.workspace_id) == []


async def test_a_round_redone_after_a_crash_writes_each_change_once(app_ctx: AppContext, calendar: Calendar) -> None:
    # The first import committed page 1, then the worker died before page 2 and before the cursor.
    first_page = [change(f"p1-{n}", hours=n) for n in range(3)]
    second_page = [change(f"p2-{n}", hours=n) for n in range(3)]
    await apply(app_ctx, calendar, *first_page, seen=set())
    # The retried job redoes the whole round: page 1 again is no change, page 2 and the sweep are.
    seen: set[str] = set()
    assert await apply(app_ctx, calendar, *first_page, seen=seen) == service.IndexCounts()
    assert await apply(app_ctx, calendar, *second_page, seen=seen) == service.IndexCounts(created=3)
    assert await service.sweep_calendar(app_ctx.db, calendar=calendar, keep=seen, window=None) == service.IndexCounts()
    changes = await feed(app_ctx, calendar.workspace_id)
    assert [c.sequence for c in changes] == list(range(1, 7))
    assert sorted(c.event["provider_event_id"] for c in changes) == sorted(seen)
    assert all(c.type == "created" and c.initial for c in changes)


async def test_a_failed_change_write_rolls_the_index_write_back(app_ctx: AppContext, calendar: Calendar) -> None:
    # A stray row takes the sequence the next change will draw: its insert fails inside the page's transaction.
    async with app_ctx.db.session() as session:
        session.add(
            CalendarChange(
                workspace_id=calendar.workspace_id, sequence=1, type="created", occurred_at=T0,
                connection_id=calendar.connection_id, calendar_id=calendar.id, event_id="cev_x", event={},
                changed_fields=[],
            )
        )  # fmt: skip
    with pytest.raises(IntegrityError):
        await apply(app_ctx, calendar, change("a"))
    async with app_ctx.db.session() as session:
        indexed = (await session.execute(select(col(CalendarEvent.id)))).all()
    assert indexed == [] and await change_events(app_ctx, calendar.workspace_id) == []
    assert [c.event_id for c in await feed(app_ctx, calendar.workspace_id)] == ["cev_x"]


async def test_stored_json_is_what_encoding_each_value_gives(app_ctx: AppContext, calendar: Calendar) -> None:
    # The event is encoded once and spliced into the change row and the outbox body: the stored texts must be
    # exactly json.dumps of the values a reader decodes, as when each column encoded its own value.
    await apply(app_ctx, calendar, change("a", summary='Quote " and é'), job_id=JOB)
    await finish_round(app_ctx, calendar)
    await apply(app_ctx, calendar, change("a", summary="Renamed"))
    await apply(app_ctx, calendar, change("a", deleted=True))
    for row in await feed(app_ctx, calendar.workspace_id):
        assert row.event["id"].startswith("cev_")
    async with app_ctx.db.session() as session:
        texts = [
            *(
                await session.execute(
                    text(
                        "SELECT CAST(event AS TEXT), CAST(changed_fields AS TEXT), CAST(previous AS TEXT) "
                        "FROM calendar_changes WHERE workspace_id = :w ORDER BY sequence"
                    ),
                    {"w": calendar.workspace_id},
                )
            ).all(),
            *(
                await session.execute(
                    text(
                        "SELECT CAST(data AS TEXT) FROM events WHERE workspace_id = :w AND type LIKE 'calendar.event.%'"
                    ),
                    {"w": calendar.workspace_id},
                )
            ).all(),
        ]
    assert len(texts) == 6
    for row in texts:
        for value in row:
            assert value == json.dumps(json.loads(value))
    bodies = [json.loads(row[0]) for row in texts[3:]]
    assert sorted(b["sequence"] for b in bodies) == [1, 2, 3]
    created = next(b for b in bodies if b["sequence"] == 1)
    assert created["event"] == json.loads(texts[0][0]) and created["event"]["title"] == 'Quote " and é'
    assert created["previous"] is None and created["initial"] is True and created["job_id"] == JOB
