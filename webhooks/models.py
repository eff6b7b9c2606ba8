"""Deliveries (one per event x subscription), their attempts, and bulk replays."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, text
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime


# pending: not yet attempted, or in flight; failed: last attempt failed, another is scheduled;
# succeeded; dead: the schedule is exhausted (waits for a replay); cancelled: will not be sent.
class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


# Plain strings (the values), for CLI choices and messages that print them.
DELIVERY_STATUSES: tuple[str, ...] = tuple(status.value for status in DeliveryStatus)
OPEN_STATUSES: tuple[str, ...] = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)

# The rows ix_deliveries_due holds: those still to send and the dead (counted for operators, rare). Succeeded and
# cancelled rows, nearly all of them, are left out: the record of each success (an update of an indexed column, so
# never a HOT update) would otherwise add an index entry that no query reads. A query meant to use the index
# states this term as written here: SQLite's planner uses a partial index only for a query that has its terms.
DUE_INDEX_STATUSES: tuple[str, ...] = (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.DEAD)
DUE_INDEX_WHERE = f"status IN ({', '.join(repr(str(status)) for status in DUE_INDEX_STATUSES)})"
# No foreign keys on deliveries or their attempts. PostgreSQL checks one per inserted row with a query that locks
# the parent row: in the benchmark's fan-out the events' and subscriptions' checks took 63 % of the insert (29 us a
# delivery), the attempts' 11 us a record. What they guarded is kept by the writers instead: subscriptions are only
# soft-deleted; an event is only deleted by retention, which locks it and re-checks for deliveries in a later
# statement, while a replay that adds deliveries to an old event holds it in KEY SHARE
# (webhooks.admin.retention); an attempt is written with its delivery row locked by the same statement, and
# retention deletes a delivery before its attempts, so one recorded meanwhile goes with it.
# Free space left in each page of deliveries: a claim writes only unindexed columns (lease_until, lease_owner), so
# with room on the row's page PostgreSQL writes it as a HOT update, no new entry in any of the table's indexes.
DELIVERIES_FILLFACTOR = 60


class ReplayableStatus(StrEnum):
    """The delivery statuses a bulk replay selects: the subset of DeliveryStatus that ended without success."""

    FAILED = DeliveryStatus.FAILED.value
    DEAD = DeliveryStatus.DEAD.value


REPLAYABLE_STATUSES: tuple[str, ...] = tuple(status.value for status in ReplayableStatus)


class ReplayKind(StrEnum):
    SINGLE = "single"
    BULK = "bulk"


class ReplayStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# A bulk replay in these statuses is still to be (or being) worked through.
ACTIVE_REPLAY_STATUSES: tuple[str, ...] = (ReplayStatus.QUEUED, ReplayStatus.RUNNING)


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_workspace_id_id", "workspace_id", "id"),
        Index("ix_deliveries_workspace_status_id", "workspace_id", "status", "id"),
        Index("ix_deliveries_workspace_subscription_id", "workspace_id", "subscription_id", "id"),
        Index(
            "ix_deliveries_due",
            "status",
            "next_attempt_at",
            postgresql_where=text(DUE_INDEX_WHERE),
            sqlite_where=text(DUE_INDEX_WHERE),
        ),
        Index("ix_deliveries_event_subscription", "event_id", "subscription_id"),
        # No index on created_at: ids encode their creation time, retention walks the primary key.
        {"postgresql_with": {"fillfactor": DELIVERIES_FILLFACTOR}},
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40)
    event_id: str = Field(max_length=40)  # events.id (no foreign key: see above)
    event_type: str = Field(max_length=100)
    subscription_id: str = Field(max_length=40)  # subscriptions.id
    status: str = Field(default=DeliveryStatus.PENDING, max_length=20)
    attempt_count: int = Field(default=0)  # attempts in the current retry sequence
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # Which claim holds the lease: a record checks this, so a renewal (which moves lease_until) never races it.
    lease_owner: str | None = Field(default=None, max_length=32)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=1000)
    cancel_reason: str | None = Field(default=None, max_length=500)
    replays: int = Field(default=0)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_delivery_attempts_delivery_number", "delivery_id", "number"),
        # No index on started_at: no query reads one (retention deletes attempts by delivery).
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40)  # deliveries.id
    workspace_id: str = Field(max_length=40)
    number: int  # 1-based, counted over the delivery's whole life (replays continue the count)
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    duration_ms: int
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, max_length=1000)
    response_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # ≤ 4 KiB


class Replay(SQLModel, table=True):
    """A bulk replay request: what matched, progress, and who asked (the audit trail)."""

    __tablename__ = "replays"
    __table_args__ = (Index("ix_replays_workspace_id_id", "workspace_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40)
    kind: str = Field(max_length=20)  # ReplayKind
    requested_by: str = Field(max_length=40)  # API key id, or "cli"
    criteria: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(default=ReplayStatus.QUEUED, max_length=20)
    matched: int = Field(default=0)
    replayed: int = Field(default=0)
    skipped: int = Field(default=0)
    cursor: str | None = Field(default=None, max_length=40)  # last delivery/event id processed
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
