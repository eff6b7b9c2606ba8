"""The endpoints providers call (CONTRACT §7), with no API key: Google's channel notifications, Graph's change and
lifecycle notifications and its validation handshake. Each declared once, like every route.

A notification proves itself by its secret (Google's channel token, Graph's clientState), compared in constant
time against the channel's sealed one; anything else is refused (Google: 404) or ignored (Graph: the item) and
schedules nothing. Rejections spend the sender's per-address budget (inbound.py): past it, 429 before any
database look-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response

from sync_trigger.push import debounce, service
from sync_trigger.push.inbound import (
    MAX_NOTIFICATION_BYTES,
    MAX_VALIDATION_TOKEN,
    BadNotification,
    check_budget,
    find_channels,
    secret_matches,
    source_of,
    spend_budget,
)
from sync_trigger.push.models import PushChannel
from synchook.context import AppContext
from synchook.errors import NotFound, PayloadTooLarge, Unavailable, ValidationFailed
from synchook.http.bodies import parse_json, read_body
from synchook.http.endpoint import Call, Endpoint, Reply
from synchook.http.wire import Wire
from synchook.metrics import record_push_notification
from synchook.queue import REDIS_LOST

# Graph batches stay far below this; look-ups go in chunks so no IN list outgrows a database's parameter limit.
_LOOKUP_CHUNK = 500
_NO_KEY = "Called by the provider, no API key. "


class NotificationReceived(Wire):
    status: Literal["received"]


RECEIVED = NotificationReceived(status="received")


class GraphQuery(BaseModel):
    validationToken: str | None = Field(  # Graph's own parameter name
        default=None,
        max_length=MAX_VALIDATION_TOKEN,
        description="Graph's validation handshake: answered 200 text/plain with this token, nothing else done",
    )


# --- Shared steps -------------------------------------------------------------------------------------------


async def _admit(call: Call[Any, None], provider: str) -> tuple[str, bytes]:
    """The sender's budget key and the body (capped at 1 MiB, else 413)."""
    request = call.request
    source = source_of(request.client.host if request.client else None)
    await check_budget(call.ctx.redis, source, provider=provider)
    try:
        raw = await read_body(request, max_bytes=MAX_NOTIFICATION_BYTES)
    except PayloadTooLarge:
        await _rejected(call.ctx, source, provider, "too_large")
        raise
    except ValidationFailed as exc:  # a Content-Length that is not a number
        await _rejected(call.ctx, source, provider, "malformed")
        raise BadNotification(exc.message) from None
    return source, raw


async def _rejected(ctx: AppContext, source: str, provider: str, outcome: str, count: int = 1) -> None:
    record_push_notification(provider, outcome, count)
    await spend_budget(ctx.redis, source, count)


async def _want(ctx: AppContext, calendar_id: str, provider: str) -> None:
    try:
        outcome = await debounce.want_sync(ctx, calendar_id)
    except (*REDIS_LOST, RuntimeError) as exc:
        # Answer 503: both providers retry it, so the change is not lost with Redis.
        record_push_notification(provider, "unavailable")
        raise Unavailable("The sync queue is unavailable", headers={"Retry-After": "5"}) from exc
    record_push_notification(provider, outcome)


async def _enqueue_channel_task(ctx: AppContext, task: str, calendar_id: str) -> None:
    try:
        # One pending task per calendar: Graph repeats lifecycle notifications until it sees the effect.
        await ctx.enqueue(task, calendar_id, _job_id=f"{task}:{calendar_id}")
    except (*REDIS_LOST, RuntimeError) as exc:
        record_push_notification("microsoft", "unavailable")
        raise Unavailable("The sync queue is unavailable", headers={"Retry-After": "5"}) from exc


# --- Google -----------------------------------------------------------------------------------------------


async def google_notification(call: Call[None, None]) -> Reply:
    source, _ = await _admit(call, "google")  # Google's messages have no body; a large one is still refused
    headers = call.request.headers
    channel_id = headers.get("x-goog-channel-id")
    state = headers.get("x-goog-resource-state")
    if not channel_id or state not in ("sync", "exists", "not_exists"):
        await _rejected(call.ctx, source, "google", "malformed")
        raise BadNotification(
            "X-Goog-Channel-ID and X-Goog-Resource-State (sync, exists or not_exists) headers are required"
        )
    if state == "sync":
        # Sent once right after events.watch, possibly before the channel's row is committed: nothing to do.
        record_push_notification("google", "sync")
        return Reply(RECEIVED)
    channel = (await find_channels(call.ctx.db, provider="google", channel_ids=[channel_id])).get(channel_id)
    if channel is None:
        await _rejected(call.ctx, source, "google", "unknown_channel")
        raise NotFound("Channel")
    if not secret_matches(call.ctx.box, channel, headers.get("x-goog-channel-token")):
        # The same answer as an unknown channel: a forger learns nothing about which channel ids exist.
        await _rejected(call.ctx, source, "google", "wrong_secret")
        raise NotFound("Channel")
    await _want(call.ctx, channel.calendar_id, "google")
    return Reply(RECEIVED)


# --- Microsoft Graph ------------------------------------------------------------------------------------------


def _handshake(call: Call[GraphQuery, None]) -> Response | None:
    # Graph calls this while our worker waits on POST /subscriptions: answered at once, no database, no Redis.
    token = call.query.validationToken
    if token is None:
        return None
    record_push_notification("microsoft", "validation")
    return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def _items(raw: bytes) -> list[Any]:
    try:
        payload = parse_json(raw, allow_empty=False)
    except ValidationFailed as exc:
        raise BadNotification(exc.message) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
        raise BadNotification('body: a JSON object {"value": [...]} is required')
    return list(payload["value"])


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        yield ids[start : start + _LOOKUP_CHUNK]


async def _verified(call: Call[GraphQuery, None], source: str, items: list[Any]) -> list[tuple[dict[str, Any], str]]:
    """The items whose subscription is ours and whose clientState matches, with their calendar; the rest ignored."""
    ids = sorted(
        {str(i["subscriptionId"]) for i in items if isinstance(i, dict) and isinstance(i.get("subscriptionId"), str)}
    )
    channels: dict[str, PushChannel] = {}
    for chunk in _chunks(ids):
        channels.update(await find_channels(call.ctx.db, provider="microsoft", channel_ids=chunk))
    verified: list[tuple[dict[str, Any], str]] = []
    rejected: dict[str, int] = {"malformed": 0, "unknown_channel": 0, "wrong_secret": 0}
    for item in items:
        subscription_id = item.get("subscriptionId") if isinstance(item, dict) else None
        if not isinstance(subscription_id, str):
            rejected["malformed"] += 1
            continue
        channel = channels.get(subscription_id)
        if channel is None:
            rejected["unknown_channel"] += 1
            continue
        client_state = item.get("clientState")
        if not isinstance(client_state, str) or not secret_matches(call.ctx.box, channel, client_state):
            rejected["wrong_secret"] += 1
            continue
        verified.append((item, channel.calendar_id))
    for outcome, count in rejected.items():
        if count:
            await _rejected(call.ctx, source, "microsoft", outcome, count)
    return verified


async def _graph_batch(call: Call[GraphQuery, None]) -> tuple[str, list[tuple[dict[str, Any], str]]]:
    source, raw = await _admit(call, "microsoft")
    try:
        items = _items(raw)
    except BadNotification:
        await _rejected(call.ctx, source, "microsoft", "malformed")
        raise
    return source, await _verified(call, source, items)


async def graph_notifications(call: Call[GraphQuery, None]) -> Response | Reply:
    answer = _handshake(call)
    if answer is not None:
        return answer
    _, verified = await _graph_batch(call)
    wanted: set[str] = set()
    for _, calendar_id in verified:
        if calendar_id in wanted:  # several changes of one calendar in one batch: one flag
            record_push_notification("microsoft", "coalesced")
            continue
        wanted.add(calendar_id)
        await _want(call.ctx, calendar_id, "microsoft")
    return Reply(RECEIVED)


async def graph_lifecycle(call: Call[GraphQuery, None]) -> Response | Reply:
    answer = _handshake(call)
    if answer is not None:
        return answer
    _, verified = await _graph_batch(call)
    for item, calendar_id in verified:
        event = item.get("lifecycleEvent")
        if event == "reauthorizationRequired":
            await _enqueue_channel_task(call.ctx, service.RENEW_TASK, calendar_id)
            record_push_notification("microsoft", "renew")
        elif event == "subscriptionRemoved":
            await _enqueue_channel_task(call.ctx, service.RECREATE_TASK, calendar_id)
            record_push_notification("microsoft", "recreate")
            await _want(call.ctx, calendar_id, "microsoft")
        elif event == "missed":
            await _want(call.ctx, calendar_id, "microsoft")
        else:  # a lifecycle event this version does not know: authentic, so not held against the sender
            record_push_notification("microsoft", "malformed")
    return Reply(RECEIVED)


_ERRORS = (400, 404, 413, 429, 503)


def _graph_endpoint(path: str, handler: Any, summary: str, otherwise: str) -> Endpoint:
    """Graph's two notification URLs: both answer the validation handshake, then take a batch (202)."""
    return Endpoint(
        method="POST",
        path=path,
        handler=handler,
        summary=summary,
        tag="providers",
        scope=None,
        query=GraphQuery,
        response=NotificationReceived,
        status=202,
        errors=_ERRORS,
        text_alternatives=((200, "text/plain"),),
        description=_NO_KEY + "With `validationToken`: 200 text/plain echoing it. " + otherwise,
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="POST",
        path=service.GOOGLE_NOTIFICATIONS,
        handler=google_notification,
        summary="Google Calendar push notification",
        tag="providers",
        scope=None,
        response=NotificationReceived,
        errors=_ERRORS,
        description=_NO_KEY
        + "Headers only (PROVIDERS.md §1.5): X-Goog-Channel-ID, X-Goog-Channel-Token, X-Goog-Resource-State. "
        "`sync` → 200 and nothing else; `exists`/`not_exists` → 200 and a sync of that calendar is scheduled "
        "(debounced). An unknown channel or a wrong token: 404; missing headers: 400; a body over 1 MiB: 413.",
    ),
    _graph_endpoint(
        service.MICROSOFT_NOTIFICATIONS,
        graph_notifications,
        "Microsoft Graph change notifications",
        'Otherwise a JSON body `{"value": [...]}` (PROVIDERS.md §2.5) → 202; each item whose subscriptionId is '
        "known and whose clientState matches schedules a sync of its calendar (debounced), the others are "
        "ignored. Malformed JSON: 400.",
    ),
    _graph_endpoint(
        service.MICROSOFT_LIFECYCLE,
        graph_lifecycle,
        "Microsoft Graph lifecycle notifications",
        'Otherwise `{"value": [...]}` → 202: reauthorizationRequired renews the subscription now, '
        "subscriptionRemoved creates a new one and syncs the calendar, missed syncs the calendar; unknown "
        "subscriptions and wrong clientStates are ignored.",
    ),
]
