"""sync_trigger: calendar connections and sync jobs

Revision ID: st0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "st0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("sync_trigger",)
depends_on: str | Sequence[str] | None = "k0001"


def upgrade() -> None:
    op.create_table(
        "calendar_connections",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("account", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("access_token_sealed", sa.String(8192), nullable=False),
        sa.Column("refresh_token_sealed", sa.String(8192), nullable=False),
        sa.Column("token_expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_synced_at", UTCDateTime(), nullable=True),
        sa.Column("last_background_sync_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_calendar_connections_workspace_provider", "calendar_connections", ["workspace_id", "provider", "status"]
    )
    op.create_table(
        "sync_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(20), nullable=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=True),
        sa.Column("from_date", UTCDateTime(), nullable=True),
        sa.Column("to_date", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_sync_jobs_workspace_status", "sync_jobs", ["workspace_id", "status"])
    op.create_index("ix_sync_jobs_workspace_trigger_queued", "sync_jobs", ["workspace_id", "trigger", "queued_at"])
    op.create_index("ix_sync_jobs_status_queued", "sync_jobs", ["status", "queued_at"])


def downgrade() -> None:
    op.drop_table("sync_jobs")
    op.drop_table("calendar_connections")
