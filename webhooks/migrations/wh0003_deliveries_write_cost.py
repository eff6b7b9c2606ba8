"""webhooks: deliveries cheaper to write: room for HOT claims, a due index of open rows, no created_at index

Revision ID: wh0003
Revises: wh0002
Create Date: 2026-12-06

Each delivery is written three times (fan-out, claim, record), and every write that cannot be HOT adds an entry to
each of the table's indexes. Measured in the benchmark's (a) on PostgreSQL: 4,442 bytes of WAL per delivery before,
3,148 after. The fill factor applies to pages written from now on; existing rows stay where they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "wh0003"
down_revision: str | None = "wh0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As webhooks.models has them at this revision (a migration does not import the models, which move on).
_DUE_WHERE = "status IN ('pending', 'failed', 'dead')"
_FILLFACTOR = 60


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE deliveries SET (fillfactor = {_FILLFACTOR})")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["status", "next_attempt_at"],
        postgresql_where=sa.text(_DUE_WHERE),
        sqlite_where=sa.text(_DUE_WHERE),
    )
    op.drop_index("ix_deliveries_created_at", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
