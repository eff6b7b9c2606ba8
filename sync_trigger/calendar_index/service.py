"""The calendar index: idempotent upserts of provider changes, deletions, and listing.

Every write takes the calendar row lock first, so two syncs of one calendar apply their pages one
after the other (PostgreSQL row lock; SQLite serialises all writers with BEGIN IMMEDIATE anyway).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger.calendar_index import changes as feed
from sync_trigger.calendar_index.models import Calendar, CalendarEvent
from sync_trigger.connectors.base import CalendarInfo, EventChange
from sync_trigger.connectors.normalized import EventStatus, EventTime, NormalizedEvent
from sync_trigger.models import Connection
from synchook.bulk import insert_rows, update_rows
from synchook.db import Database, plan_for_values
from synchook.ids import looks_like_id, new_id
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

EVENT_ID_PREFIX = "cev"
CALENDAR_ID_PREFIX = "cal"
# Keeps IN lists well under SQLite's and asyncpg's parameter limits.
CHUNK = 500
RAW_MAX_CHARS = 4096
SUMMARY_MAX_CHARS = 1024
# Bulky provider fields that the index never shows: dropped before storing `raw`.
RAW_DROPPED = frozenset(
    {"description", "body", "bodyPreview", "attendees", "conferenceData", "attachments", "extendedProperties",
     "reminders", "organizer", "onlineMeeting", "@odata.context"}
)  # fmt: skip
RAW_ESSENTIAL = (
    "id", "status", "summary", "subject", "start", "end", "updated", "lastModifiedDateTime", "isAllDay",
    "isCancelled", "etag", "@odata.etag", "iCalUID", "recurringEventId", "seriesMasterId", "type",
)  # fmt: skip

Window = tuple[datetime, datetime]
_index = cast(Table, CalendarEvent.__table__)  # type: ignore[attr-defined]
# JSON columns _event_values hands over as text (synchook.bulk `encoded`).
_INDEX_JSON = frozenset({"raw", "normalized"})
T = TypeVar("T")


@dataclass
class IndexCounts:
    """Changes really written: events created, changed in content and removed (a repeat counts 0).

    `event_ids` are the outbox events of those changes, for the queue after commit; `last_sequence` the
    highest change sequence written (None: none).
    """

    created: int = 0
    updated: int = 0
    deleted: int = 0
    # Not compared: two writes of the same counts are equal whatever ids and numbers they drew.
    event_ids: list[str] = field(default_factory=list, compare=False)
    last_sequence: int | None = field(default=None, compare=False)

    def __iadd__(self, other: IndexCounts) -> IndexCounts:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.event_ids += other.event_ids
        if other.last_sequence is not None:
            self.last_sequence = max(self.last_sequence or 0, other.last_sequence)
        return self

    @classmethod
    def of(cls, written: feed.Written) -> IndexCounts:
        return cls(written.created, written.updated, written.deleted, written.event_ids, written.last_sequence)


# --- Calendars -------------------------------------------------------------------------------------


async def sync_calendars(
    db: Database, *, connection: Connection, calendars: Sequence[CalendarInfo], job_id: str | None = None
) -> tuple[list[Calendar], IndexCounts]:
    """Make the connection's calendar rows match the provider's list; returns the rows and the events removed
    (each a `deleted` change, written in the same transaction)."""
    wanted = {c.id: c for c in calendars if not c.deleted}
    removed = IndexCounts()
    async with db.session() as session:
        # Concurrent syncs of one connection (several workers) would both insert a new calendar's row:
        # the connection's row lock serialises them, and the second then reads the first one's rows.
        await session.execute(select(col(Connection.id)).where(col(Connection.id) == connection.id).with_for_update())
        rows = {
            row.calendar_id: row
            for row in (
                await session.execute(select(Calendar).where(col(Calendar.connection_id) == connection.id))
            ).scalars()
        }
        now = utcnow()
        for calendar_id, row in rows.items():
            if calendar_id in wanted:
                row.name = wanted[calendar_id].name[:1024]
                continue
            # Gone at the provider: its events go with it, each a deleted change.
            gone = await _stored(session, row)
            for chunk in _chunks([stored.row_id for stored in gone]):
                await session.execute(delete(CalendarEvent).where(col(CalendarEvent.id).in_(chunk)))
            written = await feed.write_changes(
                session,
                calendar=row,
                pending=[feed.deleted(row, stored.row_id, stored.normalized) for stored in gone],
                job_id=job_id,
                initial=False,
                now=now,
            )
            removed += IndexCounts.of(written)
            await session.delete(row)
        for calendar_id, info in wanted.items():
            if calendar_id not in rows:
                rows[calendar_id] = Calendar(
                    id=new_id(CALENDAR_ID_PREFIX),
                    workspace_id=connection.workspace_id,
                    connection_id=connection.id,
                    provider=connection.provider,
                    calendar_id=calendar_id,
                    name=info.name[:1024],
                    created_at=now,
                )
                session.add(rows[calendar_id])
    return [rows[calendar_id] for calendar_id in wanted], removed


async def set_cursor(db: Database, *, calendar: Calendar, cursor: str | None) -> None:
    """Store (or drop, with None) the calendar's sync cursor; storing one ends a round, so it is synced now."""
    values: dict[str, Any] = {"sync_cursor": cursor}
    if cursor is not None:
        values["synced_at"] = utcnow()
    async with db.session() as session:
        await session.execute(update(Calendar).where(col(Calendar.id) == calendar.id).values(**values))
    calendar.sync_cursor = cursor
    if cursor is not None:
        calendar.synced_at = values["synced_at"]


# --- Events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    row_id: str
    event_id: str
    normalized: dict[str, Any]


_STORED_COLUMNS = (
    col(CalendarEvent.id),
    col(CalendarEvent.event_id),
    col(CalendarEvent.normalized),
    col(CalendarEvent.summary),
    col(CalendarEvent.start),
    col(CalendarEvent.end),
    col(CalendarEvent.all_day),
    col(CalendarEvent.updated),
    col(CalendarEvent.status),
)


def _stored_row(row: Any) -> _Stored:
    row_id, event_id, normalized, summary, start, end, all_day, updated, status = row
    if normalized is None:
        # Indexed before st0004: what the row's own columns say.
        normalized = _legacy_normalized(event_id, summary, start, end, all_day, updated, status).as_json()
    return _Stored(row_id, event_id, normalized)


async def _stored(session: AsyncSession, calendar: Calendar, where: ColumnElement[bool] | None = None) -> list[_Stored]:
    query = select(*_STORED_COLUMNS).where(
        col(CalendarEvent.connection_id) == calendar.connection_id,
        col(CalendarEvent.calendar_id) == calendar.calendar_id,
    )
    if where is not None:
        query = query.where(where)
    return [_stored_row(row) for row in await session.execute(query)]


def _stored_by_event_id() -> sa.Select[Any]:
    # The calendar's stored row of each event id, found as a join over the ids: the subquery's OFFSET keeps
    # PostgreSQL from flattening it, so each id is one probe of the unique index, whatever the statistics say.
    event_ids = sa.bindparam("event_ids", type_=postgresql.ARRAY(sa.String))
    wanted = sa.func.unnest(event_ids).table_valued("event_id").render_derived("wanted")
    found = (
        select(*_STORED_COLUMNS)
        .where(
            col(CalendarEvent.connection_id) == sa.bindparam("connection_id"),
            col(CalendarEvent.calendar_id) == sa.bindparam("calendar_id"),
            col(CalendarEvent.event_id) == wanted.c.event_id,
        )
        .offset(0)
        .lateral("found")
    )
    return select(found).select_from(wanted).join(found, sa.true())


# Built once: PostgreSQL's form of the lookup (SQLite has neither unnest nor LATERAL, and its IN list is probed).
_STORED_BY_EVENT_ID = _stored_by_event_id()


async def _stored_events(session: AsyncSession, calendar: Calendar, event_ids: Sequence[str]) -> list[_Stored]:
    """The stored rows of these provider event ids in the calendar.

    On PostgreSQL, as `event_id IN (...)` the page's lookup was planned as a walk of the calendar's whole part of
    the unique index, each row compared with every id: until an ANALYZE counts a new calendar's rows (a tenant's
    first import), the planner takes the calendar for a row or two. Each page of an import then read every event
    stored before it: 25 ms a page at 10,000 events in the benchmark, and growing with the calendar (quadratic
    over an import). Probing the index once per id reads only the rows asked for.
    """
    if (await session.connection()).dialect.name != "postgresql":
        stored: list[_Stored] = []
        for chunk in _chunks(event_ids):
            stored += await _stored(session, calendar, col(CalendarEvent.event_id).in_(chunk))
        return stored
    # Planned for the calendar as it is now: a generic plan made while the table was a page or two could scan it.
    await plan_for_values(session)
    values = {
        "event_ids": list(event_ids),
        "connection_id": calendar.connection_id,
        "calendar_id": calendar.calendar_id,
    }
    return [_stored_row(row) for row in await session.execute(_STORED_BY_EVENT_ID, values)]


async def apply_changes(
    db: Database,
    *,
    calendar: Calendar,
    changes: Sequence[EventChange],
    seen: set[str] | None = None,
    cursor: str | None = None,
    job_id: str | None = None,
) -> IndexCounts:
    """Apply one provider page in one transaction, with its change rows and events; with `cursor` (the round's
    final page) store it too.

    `seen` collects the ids of events the provider reported alive (a full round sweeps the rest).
    """
    # Within a page the last report of an event wins; across pages the stored event absorbs repeats.
    latest: dict[str, EventChange] = {}
    for change in changes:
        latest[change.event_id] = change
    async with db.session() as session:
        locked = await _lock_calendar(session, calendar.id)
        if locked is None:
            logger.info("calendar %s was removed during its sync; page dropped", calendar.id)
            return IndexCounts()
        initial = locked.synced_at is None
        existing = {stored.event_id: stored for stored in await _stored_events(session, calendar, list(latest))}
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        deletes: list[str] = []
        pending: list[feed.Pending] = []
        for event_id, change in latest.items():
            found = existing.get(event_id)
            made = None if change.deleted else _event_values(change)
            if made is None:
                if change.deleted and seen is not None:
                    seen.discard(event_id)
                if found is not None:
                    deletes.append(found.row_id)
                    pending.append(feed.deleted(calendar, found.row_id, found.normalized))
                continue
            if seen is not None:
                seen.add(event_id)
            values, normalized = made
            values["indexed_at"] = now
            if found is None:
                row_id = new_id(EVENT_ID_PREFIX)
                inserts.append(
                    {
                        "id": row_id,
                        "workspace_id": calendar.workspace_id,
                        "connection_id": calendar.connection_id,
                        "provider": calendar.provider,
                        "calendar_id": calendar.calendar_id,
                        "event_id": event_id,
                        **values,
                    }
                )
                pending.append(feed.created(calendar, row_id, normalized, values["normalized"]))
                continue
            change_of = feed.updated(calendar, found.row_id, found.normalized, normalized, values["normalized"])
            # Same normalised content (a no-op save, an etag bump, a repeat): nothing is written or sent.
            if change_of is not None:
                updates.append({"id": found.row_id, **values})
                pending.append(change_of)
        for chunk in _chunks(deletes):
            await session.execute(delete(CalendarEvent).where(col(CalendarEvent.id).in_(chunk)))
        # One statement each (synchook.bulk): on PostgreSQL an ORM update ran one statement per row.
        await insert_rows(session, _index, inserts, encoded=_INDEX_JSON)
        await update_rows(session, _index, updates, encoded=_INDEX_JSON)
        if cursor is not None:
            await session.execute(
                update(Calendar).where(col(Calendar.id) == calendar.id).values(sync_cursor=cursor, synced_at=now)
            )
        # Last: the workspace's sequence counter stays locked from here to the commit.
        written = await feed.write_changes(
            session, calendar=calendar, pending=pending, job_id=job_id, initial=initial, now=now
        )
    if cursor is not None:
        calendar.sync_cursor = cursor
        calendar.synced_at = now
    return IndexCounts.of(written)


async def sweep_calendar(
    db: Database, *, calendar: Calendar, keep: set[str], window: Window | None, job_id: str | None = None
) -> IndexCounts:
    """After a full round: remove the calendar's events (inside `window`, or all) the provider no longer has,
    each a deleted change."""
    async with db.session() as session:
        if await _lock_calendar(session, calendar.id) is None:
            return IndexCounts()
        where = _overlaps(window[0], window[1]) if window is not None else None
        stale = [stored for stored in await _stored(session, calendar, where) if stored.event_id not in keep]
        for chunk in _chunks([stored.row_id for stored in stale]):
            await session.execute(delete(CalendarEvent).where(col(CalendarEvent.id).in_(chunk)))
        written = await feed.write_changes(
            session,
            calendar=calendar,
            pending=[feed.deleted(calendar, stored.row_id, stored.normalized) for stored in stale],
            job_id=job_id,
            initial=False,
        )
    return IndexCounts.of(written)


def _overlaps(since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    # An event overlaps [since, until) when it ends after `since` and starts before `until`;
    # an event without an end is a point in time at its start.
    clauses: list[ColumnElement[bool]] = []
    if since is not None:
        clauses.append(
            or_(
                col(CalendarEvent.end) > since,
                and_(col(CalendarEvent.end).is_(None), col(CalendarEvent.start) >= since),
            )
        )
    if until is not None:
        clauses.append(col(CalendarEvent.start) < until)
    return and_(*clauses)


@dataclass(frozen=True, slots=True)
class _Locked:
    synced_at: datetime | None


async def _lock_calendar(session: AsyncSession, calendar_row_id: str) -> _Locked | None:
    """Lock the calendar's row (None: it is gone); `synced_at` None means its first import is under way."""
    found = await session.execute(
        select(col(Calendar.synced_at)).where(col(Calendar.id) == calendar_row_id).with_for_update()
    )
    row = found.first()
    return _Locked(row[0]) if row is not None else None


def _event_values(change: EventChange) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The index row's provider columns (`raw` and `normalized` as their JSON text) and the normalised event.

    Each JSON value is encoded once: the change row and the outbox event reuse the normalised event's text.
    """
    start = change.start or change.end
    if start is None or change.event is None:
        # Nothing to place on a timeline: the provider sent an event we cannot read.
        logger.debug("event without a readable start skipped")
        return None
    _, raw = _trimmed(change.raw)
    normalized = change.event.as_json()
    encoded = json.dumps(normalized)
    status = change.raw.get("status")
    values: dict[str, Any] = {
        "summary": change.summary[:SUMMARY_MAX_CHARS] if isinstance(change.summary, str) else None,
        "start": start,
        "end": change.end,
        "all_day": change.all_day,
        "updated": change.updated,
        "status": status[:20] if isinstance(status, str) and status else "confirmed",
        "raw": raw,
        "normalized": encoded,
        # Of the two texts the columns above derive from; nothing compares it any more (the normalised event is
        # compared field by field), and it costs one hash instead of a third encode of the event.
        "content_hash": hashlib.sha256(f"{raw}\n{encoded}".encode()).hexdigest(),
    }
    return values, normalized


def _legacy_normalized(
    event_id: str,
    summary: str | None,
    start: datetime | None,
    end: datetime | None,
    all_day: bool,
    updated: datetime | None,
    status: object,
) -> NormalizedEvent:
    """A row indexed before st0004 (no stored normalised event), read from its own columns."""

    def at(value: datetime | None) -> EventTime | None:
        if value is None:
            return None
        return EventTime(date=value.date()) if all_day else EventTime(date_time=value)

    known = {s.value for s in EventStatus}
    return NormalizedEvent(
        provider_event_id=event_id,
        title=summary[:SUMMARY_MAX_CHARS] if isinstance(summary, str) else None,
        start=at(start),
        end=at(end),
        all_day=all_day,
        status=EventStatus(status) if status in known else EventStatus.CONFIRMED,
        updated_at=updated,
    )


def trim_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """The provider's event JSON without its bulky parts, at most RAW_MAX_CHARS when serialised."""
    return _trimmed(raw)[0]


def _trimmed(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`trim_raw` and its JSON text (as the column would encode it: the measured text is the stored one)."""
    trimmed = {k: v for k, v in raw.items() if k not in RAW_DROPPED}
    encoded = json.dumps(trimmed, default=str)
    if len(encoded) <= RAW_MAX_CHARS:
        return trimmed, encoded
    trimmed = {k: raw[k] for k in RAW_ESSENTIAL if k in raw}
    encoded = json.dumps(trimmed, default=str)
    if len(encoded) <= RAW_MAX_CHARS:
        return trimmed, encoded
    trimmed = {"id": raw.get("id"), "truncated": True}
    return trimmed, json.dumps(trimmed)


# --- Listing ---------------------------------------------------------------------------------------

_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a page ended: events sort by (start, id)."""

    start: datetime
    id: str

    def encode(self) -> str:
        return f"{(self.start - _EPOCH) // timedelta(microseconds=1)}_{self.id}"

    @classmethod
    def decode(cls, value: str) -> EventPosition | None:
        micros, _, row_id = value.partition("_")
        if not micros.isdigit() or len(micros) > 18 or not looks_like_id(row_id, EVENT_ID_PREFIX):
            return None
        return cls(_EPOCH + timedelta(microseconds=int(micros)), row_id)


async def list_events(
    session: AsyncSession,
    *,
    workspace_id: str,
    limit: int,
    calendar_id: str | None = None,
    connection_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: EventPosition | None = None,
) -> list[tuple[EventPosition, dict[str, Any]]]:
    """§6.1 events (with where each sits) by start, then id, overlapping [since, until); up to limit+1 rows.

    `calendar_id` is our cal_ id; an id unknown in the workspace matches nothing.
    """
    query = select(CalendarEvent).where(col(CalendarEvent.workspace_id) == workspace_id)
    if calendar_id is not None:
        calendar = await get_calendar(session, workspace_id=workspace_id, calendar_id=calendar_id)
        if calendar is None:
            return []
        query = query.where(
            col(CalendarEvent.connection_id) == calendar.connection_id,
            col(CalendarEvent.calendar_id) == calendar.calendar_id,
        )
    if connection_id is not None:
        query = query.where(col(CalendarEvent.connection_id) == connection_id)
    if since is not None or until is not None:
        query = query.where(_overlaps(since, until))
    if after is not None:
        query = query.where(
            or_(
                col(CalendarEvent.start) > after.start,
                and_(col(CalendarEvent.start) == after.start, col(CalendarEvent.id) > after.id),
            )
        )
    rows = list(
        (await session.execute(query.order_by(col(CalendarEvent.start), col(CalendarEvent.id)).limit(limit + 1)))
        .scalars()
        .all()
    )
    calendars = await _calendars_of(session, workspace_id, {row.connection_id for row in rows})
    shown: list[tuple[EventPosition, dict[str, Any]]] = []
    for row in rows:
        calendar = calendars.get((row.connection_id, row.calendar_id))
        if calendar is None:  # removed by a sync between the two reads: its events are going too
            continue
        stored = _stored_row(
            (
                row.id,
                row.event_id,
                row.normalized,
                row.summary,
                row.start,
                row.end,
                row.all_day,
                row.updated,
                row.status,
            )
        )
        shown.append((EventPosition(row.start, row.id), feed.public_event(calendar, row.id, stored.normalized)))
    return shown


async def _calendars_of(
    session: AsyncSession, workspace_id: str, connection_ids: set[str]
) -> dict[tuple[str, str], Calendar]:
    if not connection_ids:
        return {}
    rows = await session.execute(
        select(Calendar).where(
            col(Calendar.workspace_id) == workspace_id, col(Calendar.connection_id).in_(sorted(connection_ids))
        )
    )
    return {(c.connection_id, c.calendar_id): c for c in rows.scalars()}


async def get_calendar(session: AsyncSession, *, workspace_id: str, calendar_id: str) -> Calendar | None:
    """The workspace's calendar with this cal_ id, or None (another workspace's is None too)."""
    if not looks_like_id(calendar_id, CALENDAR_ID_PREFIX):
        return None
    found = await session.execute(
        select(Calendar).where(col(Calendar.id) == calendar_id, col(Calendar.workspace_id) == workspace_id)
    )
    return found.scalars().first()


async def resolve_scope_ids(
    session: AsyncSession, *, workspace_id: str, connection_ids: Sequence[str], calendar_ids: Sequence[str]
) -> dict[str, str]:
    """The provider of each given connection and calendar id that the workspace has (subscription filters)."""
    found: dict[str, str] = {}
    wanted_connections = [c for c in connection_ids if looks_like_id(c, "conn")]
    if wanted_connections:
        rows = await session.execute(
            select(col(Connection.id), col(Connection.provider)).where(
                col(Connection.workspace_id) == workspace_id, col(Connection.id).in_(wanted_connections)
            )
        )
        found.update({row_id: provider for row_id, provider in rows})
    wanted_calendars = [c for c in calendar_ids if looks_like_id(c, CALENDAR_ID_PREFIX)]
    if wanted_calendars:
        rows = await session.execute(
            select(col(Calendar.id), col(Calendar.provider)).where(
                col(Calendar.workspace_id) == workspace_id, col(Calendar.id).in_(wanted_calendars)
            )
        )
        found.update({row_id: provider for row_id, provider in rows})
    return found


async def list_calendars(
    session: AsyncSession, *, workspace_id: str, limit: int, after_id: str | None, connection_id: str | None
) -> list[Calendar]:
    """Newest first; up to limit+1 rows."""
    query = select(Calendar).where(col(Calendar.workspace_id) == workspace_id)
    if connection_id is not None:
        query = query.where(col(Calendar.connection_id) == connection_id)
    if after_id is not None:
        query = query.where(col(Calendar.id) < after_id)
    rows = await session.execute(query.order_by(col(Calendar.id).desc()).limit(limit + 1))
    return list(rows.scalars())


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for offset in range(0, len(items), CHUNK):
        yield items[offset : offset + CHUNK]
