"""subscriptions: subscriptions and their match filters

Revision ID: sb0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from synchook.db import UTCDateTime

revision: str = "sb0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("subscriptions",)
depends_on: str | Sequence[str] | None = "k0001"


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workspace_id", sa.String(40), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("providers", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.Column("signature_type", sa.String(20), nullable=False),
        sa.Column("secret_sealed", sa.String(1024), nullable=False),
        sa.Column("public_key", sa.String(200), nullable=True),
        sa.Column("previous_secret_sealed", sa.String(1024), nullable=True),
        sa.Column("previous_secret_expires_at", UTCDateTime(), nullable=True),
        sa.Column("rate_limit_per_second", sa.Integer(), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_subscriptions_workspace_id_id", "subscriptions", ["workspace_id", "id"])
    op.create_table(
        "subscription_filters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(40), sa.ForeignKey("subscriptions.id"), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("event_pattern", sa.String(100), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
    )
    op.create_index("ix_subscription_filters_subscription_id", "subscription_filters", ["subscription_id"])
    op.create_index(
        "ix_subscription_filters_match",
        "subscription_filters",
        ["workspace_id", "event_pattern", "provider", "subscription_id"],
    )


def downgrade() -> None:
    op.drop_table("subscription_filters")
    op.drop_table("subscriptions")
