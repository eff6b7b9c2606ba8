"""Test data factories, in one place: tenants and keys here; `webhooks` (subscriptions, events, deliveries)
and `admin` (rows at a chosen time, replays) beside it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from synchook.auth.models import ALL_SCOPES
from synchook.auth.service import create_key, create_workspace
from synchook.context import AppContext
from synchook.ids import ulid


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(
    ctx: AppContext,
    *,
    name: str | None = None,
    scopes: Iterable[str] = ALL_SCOPES,
    expires_in: timedelta | None = None,
) -> Tenant:
    async with ctx.db.session() as session:
        workspace = await create_workspace(session, name=name or f"ws-{ulid()[-10:].lower()}")
        key, raw = await create_key(session, workspace_id=workspace.id, scopes=scopes, expires_in=expires_in)
    return Tenant(workspace_id=workspace.id, key_id=key.id, key=raw)


async def add_key(ctx: AppContext, tenant: Tenant, *, scopes: Iterable[str]) -> Tenant:
    async with ctx.db.session() as session:
        key, raw = await create_key(session, workspace_id=tenant.workspace_id, scopes=scopes)
    return Tenant(workspace_id=tenant.workspace_id, key_id=key.id, key=raw)
