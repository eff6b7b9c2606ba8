"""The calendar index: idempotent upserts of provider changes, deletions, and listing.

Every write takes the calendar row lock first, so two syncs of one calendar apply their pages one
after the other (PostgreSQL row lock; SQLite serialises all writers with BEGIN IMMEDIATE anyway).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, Result, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger.calendar_index.models import Calendar, CalendarEvent
from sync_trigger.connectors.base import CalendarInfo, EventChange
from sync_trigger.models import Connection
from synchook.db import Database
from synchook.ids import looks_like_id, new_id
from synchook.timeutil import isoformat, utcnow

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
T = TypeVar("T")


@dataclass
class IndexCounts:
    """Rows really created, changed and removed (a repeated change or an unknown deletion counts 0)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0

    def __iadd__(self, other: IndexCounts) -> IndexCounts:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        return self


# --- Calendars -------------------------------------------------------------------------------------


async def sync_calendars(
    db: Database, *, connection: Connection, calendars: Sequence[CalendarInfo]
) -> tuple[list[Calendar], int]:
    """Make the connection's calendar rows match the provider's list; returns the rows and events removed."""
    wanted = {c.id: c for c in calendars if not c.deleted}
    removed_events = 0
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
        for calendar_id, row in rows.items():
            if calendar_id in wanted:
                row.name = wanted[calendar_id].name[:1024]
                continue
            # Gone at the provider: its events go with it.
            removed_events += _rowcount(
                await session.execute(
                    delete(CalendarEvent).where(
                        col(CalendarEvent.connection_id) == connection.id,
                        col(CalendarEvent.calendar_id) == calendar_id,
                    )
                )
            )
            await session.delete(row)
        now = utcnow()
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
    return [rows[calendar_id] for calendar_id in wanted], removed_events


async def set_cursor(db: Database, *, calendar: Calendar, cursor: str | None) -> None:
    """Store (or drop, with None) the calendar's sync cursor."""
    async with db.session() as session:
        await session.execute(update(Calendar).where(col(Calendar.id) == calendar.id).values(sync_cursor=cursor))
    calendar.sync_cursor = cursor


# --- Events ----------------------------------------------------------------------------------------


async def apply_changes(
    db: Database,
    *,
    calendar: Calendar,
    changes: Sequence[EventChange],
    seen: set[str] | None = None,
    cursor: str | None = None,
) -> IndexCounts:
    """Apply one provider page in one transaction; with `cursor` (the round's final page) store it too.

    `seen` collects the ids of events the provider reported alive (a full round sweeps the rest).
    """
    counts = IndexCounts()
    # Within a page the last report of an event wins; across pages the stored hash absorbs repeats.
    latest: dict[str, EventChange] = {}
    for change in changes:
        latest[change.event_id] = change
    async with db.session() as session:
        if not await _lock_calendar(session, calendar.id):
            logger.info("calendar %s was removed during its sync; page dropped", calendar.id)
            return counts
        existing: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(list(latest)):
            rows = await session.execute(
                select(col(CalendarEvent.event_id), col(CalendarEvent.id), col(CalendarEvent.content_hash)).where(
                    col(CalendarEvent.connection_id) == calendar.connection_id,
                    col(CalendarEvent.calendar_id) == calendar.calendar_id,
                    col(CalendarEvent.event_id).in_(chunk),
                )
            )
            existing.update({event_id: (row_id, digest) for event_id, row_id, digest in rows})
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        deletes: list[str] = []
        for event_id, change in latest.items():
            found = existing.get(event_id)
            values = None if change.deleted else _event_values(change)
            if values is None:
                if change.deleted and seen is not None:
                    seen.discard(event_id)
                if found is not None:
                    deletes.append(found[0])
                continue
            if seen is not None:
                seen.add(event_id)
            values["indexed_at"] = now
            if found is None:
                inserts.append(
                    {
                        "id": new_id(EVENT_ID_PREFIX),
                        "workspace_id": calendar.workspace_id,
                        "connection_id": calendar.connection_id,
                        "provider": calendar.provider,
                        "calendar_id": calendar.calendar_id,
                        "event_id": event_id,
                        **values,
                    }
                )
            elif found[1] != values["content_hash"]:
                updates.append({"id": found[0], **values})
        for chunk in _chunks(deletes):
            counts.deleted += _rowcount(
                await session.execute(delete(CalendarEvent).where(col(CalendarEvent.id).in_(chunk)))
            )
        if inserts:
            await session.execute(insert(CalendarEvent), inserts)
            counts.created += len(inserts)
        if updates:
            await session.execute(update(CalendarEvent), updates)
            counts.updated += len(updates)
        if cursor is not None:
            await session.execute(
                update(Calendar).where(col(Calendar.id) == calendar.id).values(sync_cursor=cursor, synced_at=now)
            )
    if cursor is not None:
        calendar.sync_cursor = cursor
    return counts


async def sweep_calendar(db: Database, *, calendar: Calendar, keep: set[str], window: Window | None) -> int:
    """After a full round: remove the calendar's events (inside `window`, or all) the provider no longer has."""
    async with db.session() as session:
        if not await _lock_calendar(session, calendar.id):
            return 0
        query = select(col(CalendarEvent.id), col(CalendarEvent.event_id)).where(
            col(CalendarEvent.connection_id) == calendar.connection_id,
            col(CalendarEvent.calendar_id) == calendar.calendar_id,
        )
        if window is not None:
            query = query.where(_overlaps(window[0], window[1]))
        stale = [row_id for row_id, event_id in await session.execute(query) if event_id not in keep]
        deleted = 0
        for chunk in _chunks(stale):
            deleted += _rowcount(await session.execute(delete(CalendarEvent).where(col(CalendarEvent.id).in_(chunk))))
    return deleted


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


async def _lock_calendar(session: AsyncSession, calendar_row_id: str) -> bool:
    found = await session.execute(select(col(Calendar.id)).where(col(Calendar.id) == calendar_row_id).with_for_update())
    return found.first() is not None


def _event_values(change: EventChange) -> dict[str, Any] | None:
    start = change.start or change.end
    if start is None:
        # Nothing to place on a timeline: the provider sent an event we cannot read.
        logger.debug("event without a readable start skipped")
        return None
    raw = trim_raw(change.raw)
    status = change.raw.get("status")
    values: dict[str, Any] = {
        "summary": change.summary[:SUMMARY_MAX_CHARS] if isinstance(change.summary, str) else None,
        "start": start,
        "end": change.end,
        "all_day": change.all_day,
        "updated": change.updated,
        "status": status[:20] if isinstance(status, str) and status else "confirmed",
        "raw": raw,
    }
    fingerprint = {k: isoformat(v) if isinstance(v, datetime) else v for k, v in values.items()}
    encoded = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    values["content_hash"] = hashlib.sha256(encoded.encode()).hexdigest()
    return values


def trim_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """The provider's event JSON without its bulky parts, at most RAW_MAX_CHARS when serialised."""
    trimmed = {k: v for k, v in raw.items() if k not in RAW_DROPPED}
    if len(json.dumps(trimmed, default=str)) <= RAW_MAX_CHARS:
        return trimmed
    trimmed = {k: raw[k] for k in RAW_ESSENTIAL if k in raw}
    if len(json.dumps(trimmed, default=str)) <= RAW_MAX_CHARS:
        return trimmed
    return {"id": raw.get("id"), "truncated": True}


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
    since: datetime | None = None,
    until: datetime | None = None,
    after: EventPosition | None = None,
) -> list[CalendarEvent]:
    """Events by start time (then id) overlapping [since, until); up to limit+1 rows to tell if more exist."""
    query = select(CalendarEvent).where(col(CalendarEvent.workspace_id) == workspace_id)
    if calendar_id is not None:
        query = query.where(col(CalendarEvent.calendar_id) == calendar_id)
    if since is not None or until is not None:
        query = query.where(_overlaps(since, until))
    if after is not None:
        query = query.where(
            or_(
                col(CalendarEvent.start) > after.start,
                and_(col(CalendarEvent.start) == after.start, col(CalendarEvent.id) > after.id),
            )
        )
    rows = await session.execute(query.order_by(col(CalendarEvent.start), col(CalendarEvent.id)).limit(limit + 1))
    return list(rows.scalars())


def event_view(event: CalendarEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "connection_id": event.connection_id,
        "provider": event.provider,
        "calendar_id": event.calendar_id,
        "event_id": event.event_id,
        "summary": event.summary,
        "start": isoformat(event.start),
        "end": isoformat(event.end),
        "all_day": event.all_day,
        "updated": isoformat(event.updated),
        "status": event.status,
    }


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for offset in range(0, len(items), CHUNK):
        yield items[offset : offset + CHUNK]


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)
