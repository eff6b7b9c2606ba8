"""Calendar connections and sync jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class SyncMode(StrEnum):
    INCREMENTAL = "incremental"
    FULL = "full"


class SyncTrigger(StrEnum):
    """Who asked for a job (CONTRACT §7): only `api` jobs count against the on-demand cap."""

    API = "api"  # POST /v1/calendar/sync
    BACKGROUND = "background"  # the scheduler's poll of one connection
    PUSH = "push"  # a provider notification, for one calendar


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    # The provider refused the tokens: no sync runs until the account is connected again.
    REAUTH_REQUIRED = "reauth_required"


JOB_STATUSES: tuple[str, ...] = tuple(JobStatus)
ACTIVE_STATUSES: tuple[str, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)


class Connection(SQLModel, table=True):
    """A connected calendar account; tokens are sealed with the SecretBox (context = connection id)."""

    __tablename__ = "calendar_connections"
    __table_args__ = (Index("ix_calendar_connections_workspace_provider", "workspace_id", "provider", "status"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    provider: str = Field(max_length=20)
    account: str = Field(max_length=320)
    status: str = Field(default=ConnectionStatus.ACTIVE, max_length=20)
    access_token_sealed: str = Field(max_length=8192)
    refresh_token_sealed: str = Field(max_length=8192)
    token_expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    # CalDAV only (CONTRACT §8): the server and the Basic username; the password is access_token_sealed.
    server_url: str | None = Field(default=None, max_length=2048)
    username: str | None = Field(default=None, max_length=320)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    last_synced_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    last_background_sync_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    def __repr__(self) -> str:
        return f"Connection(id={self.id!r}, provider={self.provider!r}, status={self.status!r})"


class SyncJob(SQLModel, table=True):
    __tablename__ = "sync_jobs"
    __table_args__ = (
        Index("ix_sync_jobs_workspace_status", "workspace_id", "status"),
        Index("ix_sync_jobs_workspace_trigger_queued", "workspace_id", "trigger", "queued_at"),
        Index("ix_sync_jobs_status_queued", "status", "queued_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id")
    mode: str = Field(max_length=20)  # incremental | full
    provider: str | None = Field(default=None, max_length=20)  # None = every connected provider
    trigger: str = Field(default=SyncTrigger.API, max_length=20)  # a SyncTrigger
    connection_id: str | None = Field(default=None, max_length=40)
    # A push job syncs one indexed calendar (its cal_ id) of `connection_id`; None: every calendar.
    calendar_id: str | None = Field(default=None, max_length=40)
    from_date: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    to_date: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    status: str = Field(default="queued", max_length=20)
    queued_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    stats: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    attempts: int = Field(default=0)
    # The worker (synchook.janitor worker id) running it: a running job whose worker stopped beating is
    # run again at once, not after the job timeout. None for a job started before it was recorded.
    worker_id: str | None = Field(default=None, max_length=80)
    # While a provider request is being retried (unreachable, throttling, 5xx): which retry, when the
    # next try goes out, and the error that caused it. All None when the job is not retrying.
    retry_attempt: int | None = Field(default=None)
    retry_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    retry_error: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


@dataclass(frozen=True, slots=True)
class NewJob:
    """An on-demand job before it is admitted: what its row is made of (every other column NULL) and what its
    calendar.sync.queued event and the 202 read. Not a SyncJob: POST /v1/calendar/sync never loads or flushes one,
    and building that ORM object cost ~130 us, about 6 % of the request's CPU."""

    id: str
    workspace_id: str
    mode: str
    provider: str | None
    from_date: datetime | None
    to_date: datetime | None
    queued_at: datetime
    trigger: str = SyncTrigger.API
    status: str = JobStatus.QUEUED
    attempts: int = 0
    connection_id: str | None = None
    calendar_id: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    stats: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
