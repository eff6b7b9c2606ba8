"""Idempotency keys in the database: survive restarts, and a unique index makes concurrent claims exact."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from synchook.db import Database, UTCDateTime
from synchook.errors import Conflict, ValidationFailed
from synchook.timeutil import utcnow

TTL = timedelta(hours=24)
# A claim not completed (nor released) this long after it was made has lost its request: the process died
# between the claim and the commit. Far longer than a request lives (its waits for a pooled connection and
# for SQLite's write lock are 30 s each), so a retry with the key may claim it again instead of a 409 for 24 h.
# complete() checks the claim is still unfinished, so a request that did outlive this cannot commit a second job.
CLAIM_LEASE = timedelta(minutes=5)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("workspace_id", "scope", "key", name="uq_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=40)
    scope: str = Field(max_length=100)
    key: str = Field(max_length=64)
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


@dataclass(frozen=True, slots=True)
class Replay:
    status_code: int
    response: dict[str, Any]


def parse_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise ValidationFailed("Idempotency-Key: must be a UUID", field="Idempotency-Key") from None


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


async def claim(db: Database, *, workspace_id: str, scope: str, key: str, request_hash: str) -> Replay | None:
    """Claim the key for this request, or return the stored response to replay; raise if reused or in flight."""
    now = utcnow()
    for _ in range(2):
        try:
            async with db.session() as session:
                session.add(
                    IdempotencyRecord(
                        workspace_id=workspace_id, scope=scope, key=key, request_hash=request_hash, created_at=now
                    )
                )
            return None
        except IntegrityError:
            pass
        async with db.session() as session:
            record = (
                (
                    await session.execute(
                        select(IdempotencyRecord).where(
                            IdempotencyRecord.workspace_id == workspace_id,  # type: ignore[arg-type]
                            IdempotencyRecord.scope == scope,  # type: ignore[arg-type]
                            IdempotencyRecord.key == key,  # type: ignore[arg-type]
                        )
                    )
                )
                .scalars()
                .first()
            )
            if record is None:
                continue  # released between our insert and our read: claim again
            if record.created_at < now - TTL:
                await session.delete(record)
                continue
            if record.status_code is None and record.created_at < now - CLAIM_LEASE:
                await _drop_abandoned(session, record)
                continue
            if record.request_hash != request_hash:
                raise ValidationFailed(
                    "Idempotency-Key was already used with a different request body",
                    code="idempotency_key_reused",
                    field="Idempotency-Key",
                )
            if record.status_code is None or record.response is None:
                raise Conflict(
                    "A request with this Idempotency-Key is still in progress", code="idempotency_in_progress"
                )
            return Replay(record.status_code, record.response)
    raise Conflict("A request with this Idempotency-Key is still in progress", code="idempotency_in_progress")


async def _drop_abandoned(session: AsyncSession, record: IdempotencyRecord) -> None:
    # That very claim, still unfinished: two retries may find it at once, and both then race to insert anew.
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.id == record.id,  # type: ignore[arg-type]
            IdempotencyRecord.created_at == record.created_at,  # type: ignore[arg-type]
            IdempotencyRecord.status_code.is_(None),  # type: ignore[union-attr]
        )
    )


async def release(db: Database, *, workspace_id: str, scope: str, key: str) -> None:
    """Forget an unfinished claim (the request failed), so the client can retry with the same key."""
    async with db.session() as session:
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.workspace_id == workspace_id,  # type: ignore[arg-type]
                IdempotencyRecord.scope == scope,  # type: ignore[arg-type]
                IdempotencyRecord.key == key,  # type: ignore[arg-type]
                IdempotencyRecord.status_code.is_(None),  # type: ignore[union-attr]
            )
        )


async def complete(
    session: AsyncSession,
    *,
    workspace_id: str,
    scope: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict[str, Any],
) -> None:
    """Store the response inside the caller's unit of work, so it commits with the work it describes.

    Raises (and so rolls the work back) if the claim is no longer an unfinished one for this request: a
    request that outlived CLAIM_LEASE and saw a retry take its key over.
    """
    result = await session.execute(
        update(IdempotencyRecord)
        .where(
            IdempotencyRecord.workspace_id == workspace_id,  # type: ignore[arg-type]
            IdempotencyRecord.scope == scope,  # type: ignore[arg-type]
            IdempotencyRecord.key == key,  # type: ignore[arg-type]
            IdempotencyRecord.request_hash == request_hash,  # type: ignore[arg-type]
            IdempotencyRecord.status_code.is_(None),  # type: ignore[union-attr]
        )
        .values(status_code=status_code, response=response)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict("A request with this Idempotency-Key is still in progress", code="idempotency_in_progress")


async def purge_expired(db: Database) -> int:
    async with db.session() as session:
        result = await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - TTL)  # type: ignore[arg-type]
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_expired_task(ctx: dict[str, Any]) -> int:
    """arq cron: drop keys past their 24 h; a key never reused would otherwise be kept forever."""
    return await purge_expired(ctx["app"].db)
