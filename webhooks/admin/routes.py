"""HTTP endpoints of CONTRACT §4.3 (events, deliveries, replays) and the /admin console page: thin wrappers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from synchook.errors import ValidationFailed
from synchook.http.bodies import read_model
from synchook.http.guard import app_context, authorize
from synchook.http.pagination import next_cursor, page_request
from synchook.http.responses import ok, page
from webhooks.admin import queries, replays
from webhooks.admin.console import console_response
from webhooks.admin.schemas import (
    BulkReplayBody,
    attempt_out,
    delivery_filters,
    delivery_out,
    event_out,
    event_type_filter,
    flag,
    replay_out,
    time_range,
)

READ = "read:webhooks"
ADMIN = "admin:webhooks"


async def list_events(request: Request) -> JSONResponse:
    principal = await authorize(request, READ)
    ctx = app_context(request)
    paging = page_request(request)
    event_type, window = event_type_filter(request.query_params), time_range(request.query_params)
    async with ctx.db.session() as session:
        rows = await queries.list_events(
            session,
            workspace_id=principal.workspace_id,
            event_type=event_type,
            window=window,
            limit=paging.limit + 1,
            before_id=paging.after_id,
        )
    return page([event_out(row) for row in rows[: paging.limit]], next_cursor([r.id for r in rows], paging.limit))


async def list_deliveries(request: Request) -> JSONResponse:
    principal = await authorize(request, READ)
    ctx = app_context(request)
    paging = page_request(request)
    filters = delivery_filters(request.query_params)
    async with ctx.db.session() as session:
        rows = await queries.list_deliveries(
            session,
            workspace_id=principal.workspace_id,
            filters=filters,
            limit=paging.limit + 1,
            before_id=paging.after_id,
        )
    return page([delivery_out(row) for row in rows[: paging.limit]], next_cursor([r.id for r in rows], paging.limit))


async def get_delivery(request: Request) -> JSONResponse:
    principal = await authorize(request, READ)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        detail = await queries.get_delivery(
            session, workspace_id=principal.workspace_id, delivery_id=request.path_params["id"]
        )
    return ok(
        {
            **delivery_out(detail.delivery),
            "attempts": [attempt_out(attempt) for attempt in detail.attempts],
            "event": event_out(detail.event) if detail.event is not None else None,
        }
    )


async def replay_delivery(request: Request) -> JSONResponse:
    principal = await authorize(request, ADMIN)
    replay, delivery = await replays.replay_delivery(
        app_context(request),
        workspace_id=principal.workspace_id,
        delivery_id=request.path_params["id"],
        requested_by=principal.key_id,
    )
    return ok({**delivery_out(delivery), "replay_id": replay.id}, status=202)


async def create_replay(request: Request) -> JSONResponse:
    principal = await authorize(request, ADMIN)
    ctx = app_context(request)
    dry_run = flag(request.query_params, "dry_run")
    body = await read_model(request, BulkReplayBody, max_bytes=ctx.settings.max_body_bytes)
    async with ctx.db.session() as session:
        replay, match = await replays.create_bulk_replay(
            session,
            workspace_id=principal.workspace_id,
            body=body,
            requested_by=principal.key_id,
            replay_max=ctx.settings.replay_max,
            dry_run=dry_run,
        )
    counts = {"deliveries": match.deliveries, "undelivered_events": match.undelivered_events}
    if dry_run:
        return ok({"id": None, "status": "dry_run", "matched": match.total, "criteria": replay.criteria, **counts})
    await replays.enqueue_bulk_replay(ctx, replay.id)
    return ok({**replay_out(replay), **counts}, status=202)


async def list_replays(request: Request) -> JSONResponse:
    principal = await authorize(request, ADMIN)
    ctx = app_context(request)
    paging = page_request(request)
    kind = request.query_params.get("kind") or None
    if kind not in (None, "single", "bulk"):
        raise ValidationFailed("kind: must be single or bulk", field="kind")
    async with ctx.db.session() as session:
        rows = await replays.list_replays(
            session, workspace_id=principal.workspace_id, limit=paging.limit + 1, before_id=paging.after_id, kind=kind
        )
    return page([replay_out(row) for row in rows[: paging.limit]], next_cursor([r.id for r in rows], paging.limit))


async def get_replay(request: Request) -> JSONResponse:
    principal = await authorize(request, ADMIN)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        replay = await replays.get_replay(
            session, workspace_id=principal.workspace_id, replay_id=request.path_params["id"]
        )
    return ok(replay_out(replay))


async def cancel_replay(request: Request) -> JSONResponse:
    principal = await authorize(request, ADMIN)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        replay = await replays.cancel_replay(
            session, workspace_id=principal.workspace_id, replay_id=request.path_params["id"]
        )
    return ok(replay_out(replay))


async def console(request: Request) -> Response:
    return console_response()


ROUTES: list[BaseRoute] = [
    Route("/webhooks/events", list_events, methods=["GET"]),
    Route("/webhooks/deliveries", list_deliveries, methods=["GET"]),
    Route("/webhooks/deliveries/{id}", get_delivery, methods=["GET"]),
    Route("/webhooks/deliveries/{id}/replay", replay_delivery, methods=["POST"]),
    Route("/webhooks/replays", create_replay, methods=["POST"]),
    Route("/webhooks/replays", list_replays, methods=["GET"]),
    Route("/webhooks/replays/{id}", get_replay, methods=["GET"]),
    Route("/webhooks/replays/{id}/cancel", cancel_replay, methods=["POST"]),
]

PAGES: list[BaseRoute] = [Route("/admin", console, methods=["GET"])]
