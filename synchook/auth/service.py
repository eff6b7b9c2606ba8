"""Workspaces and keys: create, list, revoke, authenticate."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from synchook.auth.cache import announce_revocation
from synchook.auth.models import ALL_SCOPES, ApiKey, Principal, Workspace
from synchook.db import Database
from synchook.errors import Conflict, InvalidKey, NotFound, ValidationFailed
from synchook.ids import looks_like_id, new_id
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

KEY_PREFIX = "wbk_"
_MAX_KEY_LENGTH = 200


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def parse_scopes(raw: str | Iterable[str]) -> list[str]:
    items = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else [s.strip() for s in raw]
    scopes = [s for s in items if s]
    if not scopes:
        raise ValidationFailed("scopes: at least one scope is required", field="scopes")
    if "*" in scopes or "all" in scopes:
        return list(ALL_SCOPES)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValidationFailed(
            f"scopes: unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}", field="scopes"
        )
    return [s for s in ALL_SCOPES if s in scopes]


async def create_workspace(session: AsyncSession, *, name: str) -> Workspace:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("name: must be 1-100 characters", field="name")
    workspace = Workspace(id=new_id("ws"), name=name, created_at=utcnow())
    session.add(workspace)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"workspace {name!r} already exists", code="workspace_exists") from exc
    return workspace


async def find_workspace(session: AsyncSession, *, name_or_id: str) -> Workspace:
    row = await session.execute(
        select(Workspace).where((Workspace.name == name_or_id) | (Workspace.id == name_or_id))  # type: ignore[arg-type]
    )
    workspace = row.scalars().first()
    if workspace is None:
        raise NotFound("Workspace")
    return workspace


async def create_key(
    session: AsyncSession,
    *,
    workspace_id: str,
    scopes: Iterable[str],
    expires_in: timedelta | None = None,
    name: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned once and never stored."""
    raw = generate_key()
    now = utcnow()
    key = ApiKey(
        id=new_id("key"),
        workspace_id=workspace_id,
        key_hash=hash_key(raw),
        prefix=raw[:8],
        name=name,
        scopes=parse_scopes(list(scopes)),
        created_at=now,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    session.add(key)
    await session.flush()
    return key, raw


async def list_keys(session: AsyncSession, *, workspace_id: str) -> list[ApiKey]:
    rows = await session.execute(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.id)  # type: ignore[arg-type]
    )
    return list(rows.scalars())


async def revoke_key(session: AsyncSession, *, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id) if looks_like_id(key_id, "key") else None
    if key is None:
        raise NotFound("API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


@dataclass(frozen=True, slots=True)
class Revocation:
    key: ApiKey
    newly: bool  # False: it was revoked already
    announced: bool  # False: no Redis, or Redis failed; API processes then refuse it within KEY_CACHE_SECONDS


async def revoke(db: Database, redis: Redis | None, *, key_id: str) -> Revocation:
    """Revoke a key and announce it (synchook.auth.cache): refused by every API process from its next request on.

    Announced after the commit, so a process that looks the key up again finds it revoked; announced again for a
    key already revoked (a retry after an announcement that failed)."""
    async with db.session() as session:
        key = await revoke_key(session, key_id=key_id)
        newly = session.is_modified(key)
    announced = False
    if redis is not None:
        try:
            await announce_revocation(redis)
            announced = True
        except Exception as exc:
            logger.warning("key %s revoked, not announced: %s", key.id, type(exc).__name__)
    return Revocation(key, newly, announced)


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    """Resolve an `Authorization: Bearer wbk_…` header to a principal, or raise 401 invalid_key."""
    principal, _ = await look_up_key(session, bearer_key_hash(authorization))
    return principal


def bearer_key_hash(authorization: str | None) -> str:
    """The SHA-256 of the key an `Authorization: Bearer wbk_…` header carries; 401 invalid_key if it carries none."""
    if not authorization:
        # The commonest first-hour mistake (a curl without -H): say what is missing, not "invalid".
        raise InvalidKey(f"missing Authorization header: send Authorization: Bearer {KEY_PREFIX}…")
    if len(authorization) > _MAX_KEY_LENGTH + 10:
        raise InvalidKey()
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        raise InvalidKey(f"malformed Authorization header: send Authorization: Bearer {KEY_PREFIX}…")
    if len(token) < 40:
        raise InvalidKey()
    return hash_key(token)


async def look_up_key(session: AsyncSession | AsyncConnection, key_hash: str) -> tuple[Principal, datetime | None]:
    """The principal of a valid key and when the key expires; 401 invalid_key for an unknown, revoked or expired one.

    The columns, not the entity: nothing here needs an ORM object, and building one was a fifth of this lookup's
    CPU. The API keeps what this returns for a moment (synchook.auth.cache), as long as no key was revoked since."""
    return _valid_key((await session.execute(_KEY_LOOKUP, {"key_hash": key_hash})).first())


async def read_key(db: Database, key_hash: str) -> tuple[Principal, datetime | None]:
    """:func:`look_up_key` as one read outside any transaction (``Database.first_row``): the API's key cache miss."""
    return _valid_key(await db.first_row(_KEY_LOOKUP, {"key_hash": key_hash}))


def _valid_key(key: Any) -> tuple[Principal, datetime | None]:  # a row of _KEY_LOOKUP, or None
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= utcnow()):
        raise InvalidKey()
    return Principal(workspace_id=key.workspace_id, key_id=key.id, scopes=frozenset(key.scopes)), key.expires_at


_KEY_LOOKUP = select(
    col(ApiKey.id), col(ApiKey.workspace_id), col(ApiKey.scopes), col(ApiKey.revoked_at), col(ApiKey.expires_at)
).where(col(ApiKey.key_hash) == bindparam("key_hash"))
