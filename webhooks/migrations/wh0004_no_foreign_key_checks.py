"""webhooks: no foreign keys on deliveries and attempts, no index on delivery_attempts.started_at

Revision ID: wh0004
Revises: wh0003
Create Date: 2026-12-06

PostgreSQL checks a foreign key once per inserted row, with a query that locks the parent row. In the benchmark's
(a) the fan-out insert spent 63 % of its time in the deliveries' two checks (29 us a delivery) and the record 11 us
a delivery in the attempts' one. What they guarded is kept by the writers (webhooks.models says how). The
started_at index was read by no query. On SQLite, dropping a constraint rebuilds the table (batch mode).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "wh0004"
down_revision: str | None = "wh0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referred table): PostgreSQL named each "<table>_<column>_fkey"; SQLite's are unnamed, so batch mode
# names the reflected ones by this convention to drop them.
_FOREIGN_KEYS = (
    ("deliveries", "event_id", "events"),
    ("deliveries", "subscription_id", "subscriptions"),
    ("delivery_attempts", "delivery_id", "deliveries"),
)
_NAMING = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}


def upgrade() -> None:
    op.drop_index("ix_delivery_attempts_started_at", table_name="delivery_attempts")
    for table in ("delivery_attempts", "deliveries"):
        with op.batch_alter_table(table, naming_convention=_NAMING) as batch:
            for name, _column, _referred in _keys(table):
                batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table in ("deliveries", "delivery_attempts"):
        with op.batch_alter_table(table, naming_convention=_NAMING) as batch:
            for name, column, referred in _keys(table):
                batch.create_foreign_key(name, referred, [column], ["id"])
    op.create_index("ix_delivery_attempts_started_at", "delivery_attempts", ["started_at"])


def _keys(table: str) -> list[tuple[str, str, str]]:
    """The table's foreign keys: (name, column, referred table)."""
    return [(f"{table}_{column}_fkey", column, referred) for owner, column, referred in _FOREIGN_KEYS if owner == table]
