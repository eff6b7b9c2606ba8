from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from synchook.db import UTCDateTime


class Scope(StrEnum):
    """What an API key may do; each route declares the one it needs (synchook/http/endpoint.py)."""

    READ_CALENDAR = "read:calendar"
    WRITE_CALENDAR = "write:calendar"
    READ_WEBHOOKS = "read:webhooks"
    WRITE_WEBHOOKS = "write:webhooks"
    ADMIN_WEBHOOKS = "admin:webhooks"


ALL_SCOPES: tuple[Scope, ...] = tuple(Scope)


class Workspace(SQLModel, table=True):
    __tablename__ = "workspaces"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100, unique=True)
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(max_length=40, foreign_key="workspaces.id", index=True)
    # Only a SHA-256 of the key is kept: keys carry 256 random bits, so a fast hash is enough
    # and lookups by hash are constant-time with respect to the key's content.
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=100)
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, workspace_id={self.workspace_id!r}, scopes={self.scopes!r})"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    workspace_id: str
    key_id: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes
