"""Indexed calendars (one row per provider calendar, holding its sync cursor) and their events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Text, UniqueConstraint
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
    # sha256 of everything above that comes from the provider: a repeat of the same change is not an update.
    content_hash: str = Field(max_length=64)
    indexed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
