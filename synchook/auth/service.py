"""Workspaces and keys: create, list, revoke, authenticate."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from synchook.auth.models import ALL_SCOPES, ApiKey, Principal, Workspace
from synchook.errors import Conflict, InvalidKey, NotFound, ValidationFailed
from synchook.ids import looks_like_id, new_id
from synchook.timeutil import utcnow

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


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    """Resolve an `Authorization: Bearer wbk_…` header to a principal, or raise 401 invalid_key."""
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
    # Looked up on every request, never cached: a revoked key stops working at once. The columns, not the
    # entity: nothing here needs an ORM object, and building one was a fifth of this lookup's CPU.
    key = (await session.execute(_KEY_LOOKUP, {"key_hash": hash_key(token)})).first()
    now = utcnow()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise InvalidKey()
    return Principal(workspace_id=key.workspace_id, key_id=key.id, scopes=frozenset(key.scopes))


_KEY_LOOKUP = select(
    col(ApiKey.id), col(ApiKey.workspace_id), col(ApiKey.scopes), col(ApiKey.revoked_at), col(ApiKey.expires_at)
).where(col(ApiKey.key_hash) == bindparam("key_hash"))
