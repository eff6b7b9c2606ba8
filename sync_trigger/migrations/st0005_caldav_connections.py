"""sync_trigger: calendar_connections.server_url and .username for CalDAV connections (CONTRACT §8)

Revision ID: st0005
Revises: st0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "st0005"
# After st0004 (the change feed), built alongside.
down_revision: str | None = "st0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and without defaults: plain ADD COLUMN on both SQLite and PostgreSQL, no table rewrite.
    op.add_column("calendar_connections", sa.Column("server_url", sa.String(2048), nullable=True))
    op.add_column("calendar_connections", sa.Column("username", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calendar_connections") as batch:
        batch.drop_column("username")
        batch.drop_column("server_url")
