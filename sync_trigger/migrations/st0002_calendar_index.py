"""sync_trigger: the calendar index (calendars with their sync cursors, events)

Revision ID: st0002
Revises: st0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "st0002"
down_revision: str | None = "st0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_index_calendars",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column(
            "connection_id",
            sa.String(40),
            sa.ForeignKey("calendar_connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("calendar_id", sa.String(512), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("sync_cursor", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("connection_id", "calendar_id", name="uq_calendar_index_calendars_connection_calendar"),
    )
    op.create_index("ix_calendar_index_calendars_workspace", "calendar_index_calendars", ["workspace_id"])
    op.create_table(
        "calendar_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column(
            "connection_id",
            sa.String(40),
            sa.ForeignKey("calendar_connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("calendar_id", sa.String(512), nullable=False),
        sa.Column("event_id", sa.String(512), nullable=False),
        sa.Column("summary", sa.String(1024), nullable=True),
        sa.Column("start", UTCDateTime(), nullable=False),
        sa.Column("end", UTCDateTime(), nullable=True),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("indexed_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "connection_id", "calendar_id", "event_id", name="uq_calendar_events_connection_calendar_event"
        ),
    )
    op.create_index("ix_calendar_events_workspace_start", "calendar_events", ["workspace_id", "start", "id"])
    op.create_index(
        "ix_calendar_events_workspace_calendar_start",
        "calendar_events",
        ["workspace_id", "calendar_id", "start", "id"],
    )


def downgrade() -> None:
    op.drop_table("calendar_events")
    op.drop_table("calendar_index_calendars")
