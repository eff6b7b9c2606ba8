"""The push channel of each calendar: one row per indexed Google or Microsoft calendar that push was tried for."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, ForeignKey, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime


class PushStatus(StrEnum):
    """`push.status` of calendars and connections (CONTRACT §4.1, §7); `off` is the absence of a row."""

    OFF = "off"
    PENDING = "pending"  # a channel is being created (or re-created after the provider removed it)
    ACTIVE = "active"
    FAILED = "failed"  # create or renew failed: polled at the background interval, retried at `renew_at`


class PushChannel(SQLModel, table=True):
    """A calendar's current provider channel: Google's `events.watch` channel or a Graph subscription.

    `channel_id` is what notifications name (Google `X-Goog-Channel-ID`, Graph `subscriptionId`): Google's is
    ours, chosen before the watch call; Graph's is the provider's, known once the create returns. `secret_sealed`
    is the channel token / clientState, sealed with the SecretBox (context = calendar id) and compared in
    constant time. Deleted with the calendar (and so with the connection).
    """

    __tablename__ = "calendar_push_channels"
    __table_args__ = (
        UniqueConstraint("provider", "channel_id", name="uq_calendar_push_channels_provider_channel"),
        Index("ix_calendar_push_channels_status_renew", "status", "renew_at"),
        Index("ix_calendar_push_channels_connection", "connection_id"),
    )

    calendar_id: str = Field(
        sa_column=Column(
            String(40), ForeignKey("calendar_index_calendars.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    connection_id: str = Field(max_length=40)
    provider: str = Field(max_length=20)
    status: str = Field(default=PushStatus.PENDING, max_length=20)  # a PushStatus other than OFF
    channel_id: str | None = Field(default=None, max_length=128)
    resource_id: str | None = Field(default=None, max_length=512)  # Google's resourceId, needed to stop it
    secret_sealed: str | None = Field(default=None, max_length=1024)
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # When the channel is next renewed (active) or its create retried (failed); consecutive failures back off.
    renew_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    failures: int = Field(default=0)
    # While a worker creates, renews or replaces this channel (a provider call in flight): others leave it alone
    # until then. A worker that died mid-call frees it by running out.
    leased_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))

    def __repr__(self) -> str:
        # Never the secret.
        return f"PushChannel(calendar_id={self.calendar_id!r}, provider={self.provider!r}, status={self.status!r})"
