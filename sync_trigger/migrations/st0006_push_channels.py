"""sync_trigger: provider push (CONTRACT §7): push channels per calendar, jobs scoped to one calendar, triggers

Revision ID: st0006
Revises: st0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "st0006"
down_revision: str | None = "st0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: plain ADD COLUMN on both databases.
    op.add_column("sync_jobs", sa.Column("calendar_id", sa.String(40), nullable=True))
    # The contract names on-demand jobs' trigger "api" (§7); the cap counts them by this value.
    op.execute("UPDATE sync_jobs SET \"trigger\" = 'api' WHERE \"trigger\" = 'on_demand'")
    op.create_table(
        "calendar_push_channels",
        sa.Column(
            "calendar_id",
            sa.String(40),
            sa.ForeignKey("calendar_index_calendars.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("channel_id", sa.String(128), nullable=True),
        sa.Column("resource_id", sa.String(512), nullable=True),
        sa.Column("secret_sealed", sa.String(1024), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("renew_at", UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("leased_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "channel_id", name="uq_calendar_push_channels_provider_channel"),
    )
    op.create_index("ix_calendar_push_channels_status_renew", "calendar_push_channels", ["status", "renew_at"])
    op.create_index("ix_calendar_push_channels_connection", "calendar_push_channels", ["connection_id"])


def downgrade() -> None:
    op.drop_table("calendar_push_channels")
    op.execute("UPDATE sync_jobs SET \"trigger\" = 'on_demand' WHERE \"trigger\" = 'api'")
    with op.batch_alter_table("sync_jobs") as batch:
        batch.drop_column("calendar_id")
