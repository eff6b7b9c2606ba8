"""The auth guard every endpoint calls first: key → principal, scope check, per-key rate limit."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from synchook.auth.models import Principal, Scope
from synchook.auth.service import authenticate
from synchook.context import AppContext
from synchook.errors import InsufficientPermissions, ValidationFailed
from synchook.http.ratelimit import hit_api_limit


def app_context(request: Request) -> AppContext:
    return cast(AppContext, request.app.state.ctx)


async def authorize(request: Request, scope: Scope) -> Principal:
    ctx = app_context(request)
    # A read of its own, outside any transaction: one round trip on PostgreSQL, beside SQLite's writer.
    async with ctx.db.read() as session:
        principal = await authenticate(session, request.headers.get("authorization"))
    request.state.workspace_id = principal.workspace_id
    request.state.principal = principal
    request.state.rate_limit = await hit_api_limit(
        ctx.redis, key_id=principal.key_id, per_minute=ctx.settings.api_requests_per_minute
    )
    if not principal.has(scope):
        raise InsufficientPermissions(f"This API key lacks the {scope} scope")
    _refuse_nul_in_query(request)
    return principal


def _refuse_nul_in_query(request: Request) -> None:
    # No parameter has a use for NUL, and PostgreSQL text cannot hold it: a filter carrying one would
    # fail inside the query (500) instead of being refused here (422).
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            field = name.replace("\x00", "") or "query"
            raise ValidationFailed(f"{field}: must not contain NUL characters", field=field)
