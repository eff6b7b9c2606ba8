"""sync_trigger: the normalised event on the index row, the change feed and its per-workspace sequence

Revision ID: st0004
Revises: st0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "st0004"
down_revision: str | None = "st0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows indexed before this revision get their normalised form on their next sync (the index
    # reads a missing one from the row's own columns meanwhile); plain ADD COLUMN on both databases.
    op.add_column("calendar_events", sa.Column("normalized", sa.JSON(), nullable=True))
    op.create_table(
        "calendar_change_counters",
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "calendar_changes",
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("calendar_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("initial", sa.Boolean(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("changed_fields", sa.JSON(), nullable=False),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("workspace_id", "sequence", name="pk_calendar_changes"),
    )
    op.create_index(
        "ix_calendar_changes_workspace_connection", "calendar_changes", ["workspace_id", "connection_id", "sequence"]
    )
    op.create_index(
        "ix_calendar_changes_workspace_calendar", "calendar_changes", ["workspace_id", "calendar_id", "sequence"]
    )
    op.create_index("ix_calendar_changes_occurred_at", "calendar_changes", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("calendar_changes")
    op.drop_table("calendar_change_counters")
    with op.batch_alter_table("calendar_events") as batch:
        batch.drop_column("normalized")
