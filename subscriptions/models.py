"""Webhook subscriptions and their match filters."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime

ANY = "*"  # provider wildcard in a filter row


class SubscriptionStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class SignatureType(StrEnum):
    """How deliveries are signed: HMAC with the whsec_ secret (v1), or Ed25519 with the whsk_ key (v1a)."""

    HMAC_SHA256 = "hmac-sha256"
    ED25519 = "ed25519"


class Subscription(SQLModel, table=True):
    """An integrator's endpoint. Secrets are sealed with the SecretBox (context = subscription id)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_workspace_id_id", "workspace_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=1000)
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    providers: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # §4.2: only events of these connections (conn_…) / calendars (cal_…); None = any. Matched in memory at
    # fan-out (subscriptions.matching.in_scope) against the event's data: no query per event.
    connection_ids: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    calendar_ids: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The providers of those connections and calendars, for lifecycle events (which name a provider, not ids).
    scope_providers: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: str = Field(default=SubscriptionStatus.ENABLED, max_length=20)
    disabled_reason: str | None = Field(default=None, max_length=500)
    signature_type: str = Field(default=SignatureType.HMAC_SHA256, max_length=20)
    secret_sealed: str = Field(max_length=1024)  # whsec_… (hmac) or whsk_… (ed25519)
    public_key: str | None = Field(default=None, max_length=200)  # whpk_… for ed25519
    previous_secret_sealed: str | None = Field(default=None, max_length=1024)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    rate_limit_per_second: int | None = Field(default=None)
    # Set at the first failure after a success; cleared by a success. Drives auto-disable.
    failing_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    deleted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    def __repr__(self) -> str:
        return f"Subscription(id={self.id!r}, workspace_id={self.workspace_id!r}, status={self.status!r})"


class SubscriptionFilter(SQLModel, table=True):
    """One row per (event-type pattern x provider) of a live subscription: matching is one indexed lookup."""

    __tablename__ = "subscription_filters"
    __table_args__ = (
        Index("ix_subscription_filters_match", "workspace_id", "event_pattern", "provider", "subscription_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(max_length=40, foreign_key="subscriptions.id", index=True)
    workspace_id: str = Field(max_length=40)
    event_pattern: str = Field(max_length=100)  # "calendar.sync.completed", "calendar.sync.*", "*"
    provider: str = Field(max_length=20)  # a Provider, or ANY
