"""Indexed calendars (one row per provider calendar, holding its sync cursor) and their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, PrimaryKeyConstraint, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime

# Provider ids: Google's are short, Graph's run to ~200 characters; 512 leaves room and stays indexable.
PROVIDER_ID_LENGTH = 512


class Calendar(SQLModel, table=True):
    """A provider calendar of a connection; `sync_cursor` is Google's nextSyncToken or Graph's whole deltaLink."""

    __tablename__ = "calendar_index_calendars"
    __table_args__ = (
        UniqueConstraint("connection_id", "calendar_id", name="uq_calendar_index_calendars_connection_calendar"),
        Index("ix_calendar_index_calendars_workspace", "workspace_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    connection_id: str = Field(
        sa_column=Column(String(40), ForeignKey("calendar_connections.id", ondelete="CASCADE"), nullable=False)
    )
    provider: str = Field(max_length=20)
    calendar_id: str = Field(max_length=PROVIDER_ID_LENGTH)
    name: str = Field(max_length=1024)
    sync_cursor: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    synced_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    def __repr__(self) -> str:
        # The cursor is a bearer of sync state, not a secret, but it is long and noisy.
        return f"Calendar(id={self.id!r}, provider={self.provider!r}, calendar_id={self.calendar_id!r})"


class CalendarEvent(SQLModel, table=True):
    """One event as last reported by the provider; deleted events are removed, never kept as tombstones."""

    __tablename__ = "calendar_events"
    __table_args__ = (
        UniqueConstraint(
            "connection_id", "calendar_id", "event_id", name="uq_calendar_events_connection_calendar_event"
        ),
        Index("ix_calendar_events_workspace_start", "workspace_id", "start", "id"),
        Index("ix_calendar_events_workspace_calendar_start", "workspace_id", "calendar_id", "start", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    connection_id: str = Field(
        sa_column=Column(String(40), ForeignKey("calendar_connections.id", ondelete="CASCADE"), nullable=False)
    )
    provider: str = Field(max_length=20)
    calendar_id: str = Field(max_length=PROVIDER_ID_LENGTH)
    event_id: str = Field(max_length=PROVIDER_ID_LENGTH)
    summary: str | None = Field(default=None, max_length=1024)
    start: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    end: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    all_day: bool = Field(default=False)
    updated: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    status: str = Field(default="confirmed", max_length=20)
    raw: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # sha256 of the stored `raw` and `normalized` texts: what the provider reported (changes compare `normalized`).
    content_hash: str = Field(max_length=64)
    indexed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # The §6.1 normalised event without our ids (NormalizedEvent.as_json); None on rows indexed before st0004.
    normalized: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ChangeCounter(SQLModel, table=True):
    """The workspace's change sequence: one row, incremented inside the transaction that writes the changes.

    The increment's row lock is held until commit, so sequences are gap-free and increase in commit order.
    `purged_through` is the highest sequence retention removed: an older feed cursor has lost changes (410).
    """

    __tablename__ = "calendar_change_counters"

    workspace_id: str = Field(primary_key=True, max_length=40, foreign_key="workspaces.id")
    last_sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    purged_through: int = Field(sa_column=Column(BigInteger, nullable=False))


class CalendarChange(SQLModel, table=True):
    """One change of the feed (CONTRACT §6.3): an event that appeared, changed in content or went away.

    Ids are ours (`calendar_id` is the cal_ id, `event_id` the cev_ id) and kept without foreign keys: the feed
    outlives a deleted connection, until retention.
    """

    __tablename__ = "calendar_changes"
    __table_args__ = (
        PrimaryKeyConstraint("workspace_id", "sequence", name="pk_calendar_changes"),
        Index("ix_calendar_changes_workspace_connection", "workspace_id", "connection_id", "sequence"),
        Index("ix_calendar_changes_workspace_calendar", "workspace_id", "calendar_id", "sequence"),
        Index("ix_calendar_changes_occurred_at", "occurred_at"),
    )

    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False, autoincrement=False))
    type: str = Field(max_length=10)
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    job_id: str | None = Field(default=None, max_length=40)
    connection_id: str = Field(max_length=40)
    calendar_id: str = Field(max_length=40)
    event_id: str = Field(max_length=40)
    initial: bool = Field(default=False)
    event: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    changed_fields: list[str] = Field(sa_column=Column(JSON, nullable=False))
    previous: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
