"""HTTP endpoints of the calendar sync API: authorize → read the body → call the service → answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sync_trigger import connections, service
from sync_trigger.calendar_index import routes as calendar_index_routes
from sync_trigger.errors import SyncCapReached, SyncInProgress, SyncQuota
from sync_trigger.schemas import ConnectionCreateBody, TriggerSyncBody
from synchook.http.bodies import read_model
from synchook.http.guard import app_context, authorize
from synchook.http.pagination import next_cursor, page_request
from synchook.http.ratelimit import RateLimitState
from synchook.http.responses import ok, page
from synchook.idempotency import parse_key
from synchook.outbox import hand_off


def _cap_state(quota: SyncQuota) -> RateLimitState:
    return RateLimitState(limit=quota.limit, remaining=quota.remaining, reset_at=quota.frees_at.timestamp())


async def trigger_sync(request: Request) -> Response:
    principal = await authorize(request, "write:calendar")
    ctx = app_context(request)
    key = parse_key(request.headers.get("idempotency-key"))
    body = await read_model(request, TriggerSyncBody, max_bytes=ctx.settings.max_body_bytes, allow_empty=True)
    try:
        result = await service.trigger_sync(
            ctx.db,
            workspace_id=principal.workspace_id,
            body=body,
            cap=ctx.settings.on_demand_syncs_per_hour,
            idempotency_key=key,
            enqueue=ctx.enqueue if ctx.redis is not None else None,
        )
    except (SyncInProgress, SyncCapReached) as exc:
        # On this endpoint the X-RateLimit-* headers describe the on-demand cap, refusals included.
        request.state.rate_limit = _cap_state(exc.quota)
        raise
    request.state.rate_limit = _cap_state(result.quota)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return ok(result.data, status=result.status_code, headers=headers)


async def get_sync_job(request: Request) -> Response:
    principal = await authorize(request, "read:calendar")
    async with app_context(request).db.session() as session:
        job = await service.get_job(session, workspace_id=principal.workspace_id, job_id=request.path_params["job_id"])
    return ok(service.job_view(job))


async def create_connection(request: Request) -> Response:
    principal = await authorize(request, "write:calendar")
    ctx = app_context(request)
    body = await read_model(request, ConnectionCreateBody, max_bytes=ctx.settings.max_body_bytes)
    async with ctx.db.session() as session:
        connection = await connections.create_connection(
            session, box=ctx.box, workspace_id=principal.workspace_id, body=body
        )
    return ok(connections.connection_view(connection), status=201)


async def list_connections(request: Request) -> Response:
    principal = await authorize(request, "read:calendar")
    wanted = page_request(request)
    async with app_context(request).db.session() as session:
        rows = await connections.list_connections(
            session, workspace_id=principal.workspace_id, limit=wanted.limit, after_id=wanted.after_id
        )
    items = [connections.connection_view(c) for c in rows[: wanted.limit]]
    return page(items, next_cursor([c.id for c in rows], wanted.limit))


async def get_connection(request: Request) -> Response:
    principal = await authorize(request, "read:calendar")
    async with app_context(request).db.session() as session:
        connection = await connections.get_connection(
            session, workspace_id=principal.workspace_id, connection_id=request.path_params["connection_id"]
        )
    return ok(connections.connection_view(connection))


async def delete_connection(request: Request) -> Response:
    principal = await authorize(request, "write:calendar")
    ctx = app_context(request)
    async with ctx.db.session() as session:
        event_ids = await connections.delete_connection(
            session, workspace_id=principal.workspace_id, connection_id=request.path_params["connection_id"]
        )
    # The failed jobs' calendar.sync.failed events, after commit (the outbox sweeper covers a miss).
    await hand_off(ctx.enqueue if ctx.redis is not None else None, event_ids)
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/calendar/sync", trigger_sync, methods=["POST"]),
    Route("/calendar/sync/{job_id}", get_sync_job, methods=["GET"]),
    Route("/calendar/connections", create_connection, methods=["POST"]),
    Route("/calendar/connections", list_connections, methods=["GET"]),
    Route("/calendar/connections/{connection_id}", get_connection, methods=["GET"]),
    Route("/calendar/connections/{connection_id}", delete_connection, methods=["DELETE"]),
    *calendar_index_routes.ROUTES,
]
