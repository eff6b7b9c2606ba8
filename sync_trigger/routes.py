"""HTTP endpoints of the calendar sync API (CONTRACT §4.1), each declared once: scope, models, errors."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response

from sync_trigger import connections, service
from sync_trigger.calendar_index import routes as calendar_index_routes
from sync_trigger.errors import InvalidServerURL, SyncCapReached, SyncInProgress, SyncQuota
from sync_trigger.push import service as push
from sync_trigger.schemas import (
    CalDAVConnectionBody,
    ConnectionCreateBody,
    ConnectionView,
    SyncAccepted,
    SyncJobView,
    TriggerSyncBody,
)
from synchook.auth.models import Scope
from synchook.http.endpoint import Call, Endpoint, Page, Reply
from synchook.http.pagination import PageQuery, next_cursor
from synchook.http.ratelimit import RateLimitState
from synchook.idempotency import parse_key
from synchook.outbox import hand_off
from synchook.settings import Settings
from synchook.url_safety import UnsafeURL, check_as_configured


def _cap_state(quota: SyncQuota) -> RateLimitState:
    return RateLimitState(limit=quota.limit, remaining=quota.remaining, reset_at=quota.frees_at.timestamp())


async def trigger_sync(call: Call[None, TriggerSyncBody]) -> Reply:
    key = parse_key(call.request.headers.get("idempotency-key"))
    try:
        result = await service.trigger_sync(
            call.ctx.db,
            workspace_id=call.workspace_id,
            body=call.body,
            cap=call.ctx.settings.on_demand_syncs_per_hour,
            idempotency_key=key,
            redis=call.ctx.redis,
            pipe=call.ctx.hits,
        )
    except (SyncInProgress, SyncCapReached) as exc:
        # On this endpoint the X-RateLimit-* headers describe the on-demand cap, refusals included.
        call.request.state.rate_limit = _cap_state(exc.quota)
        raise
    call.request.state.rate_limit = _cap_state(result.quota)
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Reply(SyncAccepted.model_validate(result.data), status=result.status_code, headers=headers)


async def get_sync_job(call: Call[None, None]) -> SyncJobView:
    # One SELECT: no transaction, no SQLite write lock, no ORM.
    job = await service.get_job(call.ctx.db, workspace_id=call.workspace_id, job_id=call.path["job_id"])
    return SyncJobView.of(job)


async def create_connection(call: Call[None, ConnectionCreateBody]) -> ConnectionView:
    body = call.body.root
    server_url = None
    if isinstance(body, CalDAVConnectionBody):
        server_url = await _safe_server_url(call.ctx.settings, body.server_url)
    async with call.ctx.db.session() as session:
        connection = await connections.create_connection(
            session, box=call.ctx.box, workspace_id=call.workspace_id, body=body, server_url=server_url
        )
    return ConnectionView.of(connection)


async def _safe_server_url(settings: Settings, url: str) -> str:
    """The webhook URL-safety check (CONTRACT §8); resolved before the unit of work, as for subscriptions."""
    try:
        return await check_as_configured(settings, url)
    except UnsafeURL as exc:
        raise InvalidServerURL(exc.reason) from None


async def list_connections(call: Call[PageQuery, None]) -> Page:
    async with call.ctx.db.session() as session:
        rows = await connections.list_connections(
            session, workspace_id=call.workspace_id, limit=call.query.limit, after_id=call.query.after_id
        )
        shown = rows[: call.query.limit]
        views = await push.connection_push(session, settings=call.ctx.settings, connections=shown)
    items: list[BaseModel] = [ConnectionView.of(c, push.push_of(views, c.id)) for c in shown]
    return Page(items, next_cursor([c.id for c in rows], call.query.limit))


async def get_connection(call: Call[None, None]) -> ConnectionView:
    async with call.ctx.db.session() as session:
        connection = await connections.get_connection(
            session, workspace_id=call.workspace_id, connection_id=call.path["connection_id"]
        )
        views = await push.connection_push(session, settings=call.ctx.settings, connections=[connection])
    return ConnectionView.of(connection, push.push_of(views, connection.id))


async def delete_connection(call: Call[None, None]) -> Response:
    async with call.ctx.db.session() as session:
        connection = await connections.get_connection(
            session, workspace_id=call.workspace_id, connection_id=call.path["connection_id"]
        )
        # Collected before the delete: its channel rows go with it (cascade), the channels at the provider do not.
        stop = await push.stop_order(session, connection=connection)
        event_ids = await connections.delete_connection(
            session, workspace_id=call.workspace_id, connection_id=connection.id
        )
    # The failed jobs' calendar.sync.failed events, after commit (the outbox sweeper covers a miss).
    await hand_off(call.ctx.enqueue if call.ctx.redis is not None else None, event_ids)
    await push.queue_stop(call.ctx, stop)
    return Response(status_code=204)


_CONNECTION = "/v1/calendar/connections/{connection_id}"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="POST",
        path="/v1/calendar/sync",
        handler=trigger_sync,
        summary="Trigger a calendar sync",
        tag="calendar",
        scope=Scope.WRITE_CALENDAR,
        body=TriggerSyncBody,
        body_required=False,
        response=SyncAccepted,
        status=202,
        errors=(409, 422, 429),
        idempotent_key_header=True,
        description="An empty body means an incremental sync of every connected calendar. 403 "
        "`insufficient_permissions` also when the workspace (or provider) has no connected calendar; 409 "
        "`sync_in_progress`, `idempotency_in_progress`; 422 `idempotency_key_reused`; 429 `rate_limited` past the "
        "hourly on-demand cap (the X-RateLimit-* headers describe that cap here).",
        extra_response_headers=("Idempotent-Replayed",),
    ),
    Endpoint(
        method="GET",
        path="/v1/calendar/sync/{job_id}",
        handler=get_sync_job,
        summary="Get a sync job",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        response=SyncJobView,
        errors=(404,),
    ),
    Endpoint(
        method="POST",
        path="/v1/calendar/connections",
        handler=create_connection,
        summary="Connect a calendar account",
        tag="calendar",
        scope=Scope.WRITE_CALENDAR,
        body=ConnectionCreateBody,
        response=ConnectionView,
        status=201,
        errors=(409,),
        description="Tokens and CalDAV passwords are stored encrypted and never returned; 409 `connection_exists` "
        "for an account already connected; 422 `invalid_url` for a CalDAV `server_url` Synchook may not call.",
    ),
    Endpoint(
        method="GET",
        path="/v1/calendar/connections",
        handler=list_connections,
        summary="List connections",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        query=PageQuery,
        response=ConnectionView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path=_CONNECTION,
        handler=get_connection,
        summary="Get a connection",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        response=ConnectionView,
        errors=(404,),
    ),
    Endpoint(
        method="DELETE",
        path=_CONNECTION,
        handler=delete_connection,
        summary="Disconnect a calendar account",
        tag="calendar",
        scope=Scope.WRITE_CALENDAR,
        status=204,
        errors=(404,),
        description="Its queued and running sync jobs end `failed` with `connection_deleted`; its push channels are "
        "stopped at the provider.",
    ),
    *calendar_index_routes.ENDPOINTS,
]
