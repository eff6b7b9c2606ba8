"""sync_trigger: sync_jobs.worker_id (the worker running it) and its provider retry state

Revision ID: st0003
Revises: st0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "st0003"
down_revision: str | None = "st0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("worker_id", "retry_attempt", "retry_at", "retry_error")


def upgrade() -> None:
    # Nullable and without defaults: plain ADD COLUMN on both SQLite and PostgreSQL, no table rewrite.
    op.add_column("sync_jobs", sa.Column("worker_id", sa.String(80), nullable=True))
    op.add_column("sync_jobs", sa.Column("retry_attempt", sa.Integer(), nullable=True))
    op.add_column("sync_jobs", sa.Column("retry_at", UTCDateTime(), nullable=True))
    op.add_column("sync_jobs", sa.Column("retry_error", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_jobs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
