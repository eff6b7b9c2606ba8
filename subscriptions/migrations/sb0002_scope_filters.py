"""subscriptions: connection_ids and calendar_ids filters (CONTRACT §4.2)

Revision ID: sb0002
Revises: sb0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sb0002"
down_revision: str | None = "sb0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("connection_ids", "calendar_ids", "scope_providers")


def upgrade() -> None:
    # Nullable JSON: plain ADD COLUMN on both databases; null is "no such filter".
    for name in COLUMNS:
        op.add_column("subscriptions", sa.Column(name, sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
