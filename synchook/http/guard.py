"""The auth guard every endpoint calls first: key → principal, scope check, per-key rate limit."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from synchook.auth.cache import read_epoch
from synchook.auth.models import Principal, Scope
from synchook.auth.service import bearer_key_hash, read_key
from synchook.context import AppContext
from synchook.errors import InsufficientPermissions, ValidationFailed
from synchook.http.ratelimit import RateLimitState, count_api_hit


def app_context(request: Request) -> AppContext:
    return cast(AppContext, request.app.state.ctx)


async def authorize(request: Request, scope: Scope) -> Principal:
    ctx = app_context(request)
    key_hash = bearer_key_hash(request.headers.get("authorization"))
    per_minute = ctx.settings.api_requests_per_minute
    principal: Principal | None = None
    limit: RateLimitState | None = None
    cached = ctx.keys.get(key_hash)
    if cached is not None:
        # The rate-limit hit and the revocation epoch in one command: a key looked up a moment ago is used again
        # only if no key was revoked since (synchook.auth.cache).
        limit, epoch = await count_api_hit(ctx.hits, key_id=cached.principal.key_id, per_minute=per_minute)
        if epoch is not None and epoch == cached.epoch and not cached.expired():
            principal = cached.principal
        else:
            ctx.keys.drop(key_hash)
    if principal is None:
        principal = await _look_up(ctx, key_hash)
    if limit is None:
        limit, _ = await count_api_hit(ctx.hits, key_id=principal.key_id, per_minute=per_minute)
    request.state.workspace_id = principal.workspace_id
    request.state.principal = principal
    request.state.rate_limit = limit
    if limit.remaining < 0:
        raise limit.exceeded(f"Too many requests: {per_minute} per minute per key")
    if not principal.has(scope):
        raise InsufficientPermissions(f"This API key lacks the {scope} scope")
    _refuse_nul_in_query(request)
    return principal


async def _look_up(ctx: AppContext, key_hash: str) -> Principal:
    # The epoch is read before the lookup: a revocation committed after the lookup then always changes it.
    epoch = await read_epoch(ctx.redis)
    # A read of its own, outside any transaction (one round trip on PostgreSQL, beside SQLite's writer), no session.
    principal, expires_at = await read_key(ctx.db, key_hash)
    if epoch is not None:
        ctx.keys.put(key_hash, principal, expires_at=expires_at, epoch=epoch)
    return principal


def _refuse_nul_in_query(request: Request) -> None:
    # No parameter has a use for NUL, and PostgreSQL text cannot hold it: a filter carrying one would
    # fail inside the query (500) instead of being refused here (422).
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            field = name.replace("\x00", "") or "query"
            raise ValidationFailed(f"{field}: must not contain NUL characters", field=field)
