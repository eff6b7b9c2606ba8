"""HTTP endpoints of CONTRACT §4.3 (events, deliveries, replays), each declared once, and the /admin console page."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response

from synchook.auth.models import Scope
from synchook.http.endpoint import Call, Endpoint, Page, Reply
from synchook.http.pagination import next_cursor
from webhooks.admin import queries, replays
from webhooks.admin.console import console_response
from webhooks.admin.schemas import (
    BulkReplayBody,
    CreateReplayQuery,
    DeliveriesQuery,
    DeliveryDetailView,
    DeliveryReplayed,
    DeliveryView,
    EventsQuery,
    EventView,
    ReplayCreated,
    ReplayPreview,
    ReplaysQuery,
    ReplayView,
)


async def list_events(call: Call[EventsQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await queries.list_events(
            session,
            workspace_id=call.workspace_id,
            event_type=query.type,
            window=query.range,
            limit=query.limit + 1,
            before_id=query.after_id,
        )
    items: list[BaseModel] = [EventView.of(row) for row in rows[: query.limit]]
    return Page(items, next_cursor([r.id for r in rows], query.limit))


async def list_deliveries(call: Call[DeliveriesQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await queries.list_deliveries(
            session,
            workspace_id=call.workspace_id,
            filters=query.filters(),
            limit=query.limit + 1,
            before_id=query.after_id,
        )
    items: list[BaseModel] = [DeliveryView.of(row) for row in rows[: query.limit]]
    return Page(items, next_cursor([r.id for r in rows], query.limit))


async def get_delivery(call: Call[None, None]) -> DeliveryDetailView:
    async with call.ctx.db.session() as session:
        detail = await queries.get_delivery(session, workspace_id=call.workspace_id, delivery_id=call.path["id"])
    return DeliveryDetailView.of_detail(detail.delivery, detail.attempts, detail.event)


async def replay_delivery(call: Call[None, None]) -> DeliveryReplayed:
    replay, delivery = await replays.replay_delivery(
        call.ctx, workspace_id=call.workspace_id, delivery_id=call.path["id"], requested_by=call.principal.key_id
    )
    return DeliveryReplayed(**DeliveryView.fields_of(delivery), replay_id=replay.id)


async def create_replay(call: Call[CreateReplayQuery, BulkReplayBody]) -> Reply:
    dry_run = call.query.dry_run
    async with call.ctx.db.session() as session:
        replay, match = await replays.create_bulk_replay(
            session,
            workspace_id=call.workspace_id,
            body=call.body,
            requested_by=call.principal.key_id,
            replay_max=call.ctx.settings.replay_max,
            dry_run=dry_run,
        )
    if dry_run:
        preview = ReplayPreview(
            id=None,
            status="dry_run",
            matched=match.total,
            criteria=replay.criteria,
            deliveries=match.deliveries,
            undelivered_events=match.undelivered_events,
        )
        return Reply(preview, status=200)
    await replays.enqueue_bulk_replay(call.ctx, replay.id)
    created = ReplayCreated(
        **ReplayView.fields_of(replay), deliveries=match.deliveries, undelivered_events=match.undelivered_events
    )
    return Reply(created)


async def list_replays(call: Call[ReplaysQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await replays.list_replays(
            session, workspace_id=call.workspace_id, limit=query.limit + 1, before_id=query.after_id, kind=query.kind
        )
    items: list[BaseModel] = [ReplayView.of(row) for row in rows[: query.limit]]
    return Page(items, next_cursor([r.id for r in rows], query.limit))


async def get_replay(call: Call[None, None]) -> ReplayView:
    async with call.ctx.db.session() as session:
        replay = await replays.get_replay(session, workspace_id=call.workspace_id, replay_id=call.path["id"])
    return ReplayView.of(replay)


async def cancel_replay(call: Call[None, None]) -> ReplayView:
    async with call.ctx.db.session() as session:
        replay = await replays.cancel_replay(session, workspace_id=call.workspace_id, replay_id=call.path["id"])
    return ReplayView.of(replay)


async def console(_call: Call[None, None]) -> Response:
    return console_response()


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="GET",
        path="/v1/webhooks/events",
        handler=list_events,
        summary="List events",
        tag="webhooks",
        scope=Scope.READ_WEBHOOKS,
        query=EventsQuery,
        response=EventView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path="/v1/webhooks/deliveries",
        handler=list_deliveries,
        summary="List deliveries",
        tag="webhooks",
        scope=Scope.READ_WEBHOOKS,
        query=DeliveriesQuery,
        response=DeliveryView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path="/v1/webhooks/deliveries/{id}",
        handler=get_delivery,
        summary="Get a delivery with its attempts",
        tag="webhooks",
        scope=Scope.READ_WEBHOOKS,
        response=DeliveryDetailView,
        errors=(404,),
    ),
    Endpoint(
        method="POST",
        path="/v1/webhooks/deliveries/{id}/replay",
        handler=replay_delivery,
        summary="Replay a delivery",
        tag="webhooks",
        scope=Scope.ADMIN_WEBHOOKS,
        response=DeliveryReplayed,
        status=202,
        errors=(404, 409),
        description="Starts a fresh retry sequence; audited.",
    ),
    Endpoint(
        method="POST",
        path="/v1/webhooks/replays",
        handler=create_replay,
        summary="Bulk replay",
        tag="webhooks",
        scope=Scope.ADMIN_WEBHOOKS,
        query=CreateReplayQuery,
        body=BulkReplayBody,
        response=ReplayCreated,
        alternatives=((200, ReplayPreview),),
        status=202,
        errors=(404, 409),
        description="Replays every matching delivery (default statuses failed and dead); with "
        "`subscription_id`, events of the range that never had a delivery to it are sent too; audited. "
        "More than SYNCHOOK_REPLAY_MAX matches: 422 `replay_too_large` (its message gives the count) "
        "unless `confirm_count` equals the count. While a bulk replay of the workspace is queued or "
        "running: 409 `replay_in_progress`. `?dry_run=true` only counts (200).",
    ),
    Endpoint(
        method="GET",
        path="/v1/webhooks/replays",
        handler=list_replays,
        summary="List replays (the audit trail)",
        tag="webhooks",
        scope=Scope.ADMIN_WEBHOOKS,
        query=ReplaysQuery,
        response=ReplayView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path="/v1/webhooks/replays/{id}",
        handler=get_replay,
        summary="Get a bulk replay's progress",
        tag="webhooks",
        scope=Scope.ADMIN_WEBHOOKS,
        response=ReplayView,
        errors=(404,),
    ),
    Endpoint(
        method="POST",
        path="/v1/webhooks/replays/{id}/cancel",
        handler=cancel_replay,
        summary="Cancel a bulk replay",
        tag="webhooks",
        scope=Scope.ADMIN_WEBHOOKS,
        response=ReplayView,
        errors=(404, 409),
        description="Stops a queued or running bulk replay after its current batch; 409 `replay_finished` "
        "once it has ended.",
    ),
]

# Outside /v1: the console page signs in with a key in the browser, so the page itself needs none.
PAGES: list[Endpoint] = [
    Endpoint(
        method="GET",
        path="/admin",
        handler=console,
        summary="Admin console",
        tag="admin",
        scope=None,
        media_type="text/html",
        description="The web console (HTML): deliveries, attempts, replays; signed in with an API key "
        "holding `admin:webhooks`.",
    )
]
