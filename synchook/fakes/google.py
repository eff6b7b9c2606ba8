"""Google Calendar v3: calendarList and events listings, their errors and wire format (PROVIDERS.md §1).

Sync tokens do not filter by the original window: changes outside it come too.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from synchook.fakes import content
from synchook.fakes._common import clamp, new_token, utc_millis
from synchook.fakes.models import GOOGLE, FakeAccount, FakeCalendar, FakeEvent, Fault
from synchook.fakes.paging import Owner, Snapshot
from synchook.fakes.push import GOOGLE_MAX_TTL, PushChannel, google_resource_id
from synchook.fakes.state import ProviderState

GOOGLE_SYNC_INCOMPATIBLE = frozenset(
    {"iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin"}
)
_EVENTS, _CALENDARS = "calendar#events", "calendar#calendarList"
_CHANNEL_ID = re.compile(r"[A-Za-z0-9\-_+/=]{1,64}")


def calendars(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    query = dict(request.query_params)
    if "pageToken" in query:
        return _page(fakes, query.pop("pageToken"), query, (GOOGLE, acc.account, ""), _CALENDARS)
    items = [
        {"kind": "calendar#calendarListEntry", "id": c.id, "summary": c.name, "timeZone": "UTC",
         "accessRole": "owner", "primary": c.id == acc.account}
        for c in acc.calendars.values()
    ]  # fmt: skip
    size = clamp(query.get("maxResults"), 100, 250)
    snap = Snapshot((GOOGLE, acc.account, ""), 0, items, {"nextSyncToken": new_token()}, _fingerprint(query))
    return _serve(fakes, snap, 0, size, _CALENDARS)


def events(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    cal = acc.calendars.get(request.path_params["calendar_id"])
    if cal is None:
        return error(404, "global", "notFound", "Not Found")
    query = dict(request.query_params)
    owner = (GOOGLE, acc.account, cal.id)
    if "pageToken" in query:
        return _page(fakes, query.pop("pageToken"), query, owner, _EVENTS, cal)
    sync_token = query.get("syncToken")
    if sync_token is not None:
        clash = sorted(GOOGLE_SYNC_INCOMPATIBLE & query.keys())
        if clash:
            return error(400, "global", "invalid", f"Sync token cannot be used with {clash[0]}.", location=clash[0])
        cursor = fakes.pager.cursors.get(sync_token)
        if cursor is None or cursor.owner != owner or cursor.epoch != cal.epoch:
            return error(
                410, "calendar", "fullSyncRequired", "Sync token is no longer valid, a full sync is required.",
                location="syncToken",
            )  # fmt: skip
        changed = [e for e in cal.events.values() if e.seq > cursor.seq]
    else:
        try:
            time_min = _rfc3339(query.get("timeMin"))
            time_max = _rfc3339(query.get("timeMax"))
        except ValueError as exc:
            return error(400, "global", "badRequest", str(exc))
        if time_min and time_max and time_max <= time_min:
            return error(400, "calendar", "timeRangeEmpty", "The specified time range is empty.")
        changed = [
            e
            for e in cal.events.values()
            if (query.get("showDeleted") == "true" or not e.deleted)
            and (time_min is None or e.bounds()[1] > time_min)
            and (time_max is None or e.bounds()[0] < time_max)
        ]
    changed.sort(key=lambda e: e.seq)
    next_sync = fakes.pager.new_cursor(owner, cal, None)
    items = [render(e) for e in changed]
    size = clamp(query.get("maxResults"), fakes.page_size[GOOGLE], 2500)
    snap = Snapshot(owner, cal.epoch, items, {"nextSyncToken": next_sync}, _fingerprint(query))
    return _serve(fakes, snap, 0, size, _EVENTS)


def _page(
    fakes: ProviderState, token: str, query: dict[str, str], owner: Owner, kind: str, cal: FakeCalendar | None = None
) -> Response:
    found = fakes.pager.pages.get(token)
    if found is None or found[0].owner != owner or (cal is not None and found[0].epoch != cal.epoch):
        if cal is not None and found is not None:
            return error(410, "calendar", "fullSyncRequired", "Sync token is no longer valid.")
        return error(400, "global", "invalid", "Invalid page token value.", location="pageToken")
    snap, offset = found
    if snap.fingerprint != _fingerprint(query):
        return error(400, "global", "invalid", "pageToken used with a different query.")
    default = fakes.page_size[GOOGLE] if kind == _EVENTS else 100
    return _serve(fakes, snap, offset, clamp(query.get("maxResults"), default, 2500), kind)


def _serve(fakes: ProviderState, snap: Snapshot, offset: int, size: int, kind: str) -> Response:
    body: dict[str, Any] = {"kind": kind, "etag": f'"{secrets.token_hex(4)}"'}
    if kind == _EVENTS:
        body.update(summary=snap.owner[2], updated=utc_millis(datetime.now(UTC)), timeZone="UTC")
    items, next_page = fakes.pager.page(snap, offset, size)
    body["items"] = items
    if next_page is not None:
        body["nextPageToken"] = next_page
    else:
        body.update(snap.final)
    return JSONResponse(body)


# ---- push (PROVIDERS.md §1.5) -------------------------------------------------------------------


def watch(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`POST /calendars/{calendarId}/events/watch`: a channel; its `sync` message follows the answer."""
    cal = acc.calendars.get(request.path_params["calendar_id"])
    if cal is None:
        return error(404, "global", "notFound", "Not Found")
    body = request.state.body
    if body is None:
        return error(400, "global", "parseError", "Parse Error")
    channel_id, address, token = body.get("id"), body.get("address"), body.get("token")
    if not isinstance(channel_id, str) or not channel_id:
        return error(400, "global", "required", "Required: channel id", location="id")
    if not _CHANNEL_ID.fullmatch(channel_id):
        return error(400, "global", "invalid", f"Invalid channel id: {channel_id[:80]!r}", location="id")
    if body.get("type") not in ("web_hook", "webhook"):
        return error(400, "global", "invalid", "Invalid value for channel type", location="type")
    # Google takes https only; http is allowed here for loopback tests.
    if (
        not isinstance(address, str)
        or urlsplit(address).scheme not in ("https", "http")
        or not urlsplit(address).netloc
    ):
        return error(400, "push", "push.webhookUrlNotHttps", "WebHook callback must be HTTPS: " + str(address)[:200])
    if token is not None and (not isinstance(token, str) or len(token) > 256):
        return error(400, "global", "invalid", "Invalid channel token: at most 256 characters", location="token")
    try:
        ttl = _channel_ttl(body)
    except ValueError as exc:
        return error(400, "global", "invalid", str(exc), location="params.ttl")
    existing = fakes.push.get(GOOGLE, channel_id)
    if existing is not None and existing.live():
        return error(400, "push", "channelIdNotUnique", "Channel id not unique")
    channel = PushChannel(
        GOOGLE, channel_id, acc.account, cal.id, address, datetime.now(UTC).replace(microsecond=0) + ttl, token,
        resource_id=google_resource_id(acc.account, cal.id),
        resource=f"{_root(request)}/calendars/{quote(request.path_params['calendar_id'], safe='')}/events?alt=json",
    )  # fmt: skip
    fakes.push.add(channel)
    answer = {
        "kind": "api#channel",
        "id": channel.id,
        "resourceId": channel.resource_id,
        "resourceUri": channel.resource,
        "expiration": str(int(channel.expiration.timestamp() * 1000)),
    }
    if token is not None:
        answer["token"] = token
    return JSONResponse(answer, background=BackgroundTask(fakes.push.after_watch, channel.id))


def stop_channel(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`POST /channels/stop` `{"id", "resourceId"}` → 204; 404 for a channel this account does not have live."""
    body = request.state.body
    if body is None:
        return error(400, "global", "parseError", "Parse Error")
    channel_id, resource_id = body.get("id"), body.get("resourceId")
    if not isinstance(channel_id, str) or not isinstance(resource_id, str):
        return error(400, "global", "required", "Required: id and resourceId")
    channel = fakes.push.get(GOOGLE, channel_id)
    if channel is None or not channel.live() or channel.resource_id != resource_id or channel.account != acc.account:
        return error(404, "global", "notFound", f"Channel '{channel_id[:80]}' not found for project 'synchook-fake'")
    channel.state = "stopped"
    return Response(status_code=204)


def _channel_ttl(body: dict[str, Any]) -> timedelta:
    """`params.ttl` in seconds (a string on the wire), capped at 7 days, 7 days when absent."""
    params = body.get("params") or {}
    raw = params.get("ttl") if isinstance(params, dict) else None
    if raw is None:
        return GOOGLE_MAX_TTL
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid value for params.ttl: {str(raw)[:40]!r}") from None
    if seconds <= 0:
        raise ValueError("params.ttl must be positive")
    return min(timedelta(seconds=seconds), GOOGLE_MAX_TTL)


def _root(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/google/calendar/v3"


# ---- errors ------------------------------------------------------------------------------------


def error(
    status: int,
    domain: str,
    reason: str,
    message: str,
    *,
    location: str | None = None,
    location_type: str = "parameter",
) -> Response:
    item: dict[str, str] = {"domain": domain, "reason": reason, "message": message}
    if location:
        item.update(locationType=location_type, location=location)
    return JSONResponse({"error": {"errors": [item], "code": status, "message": message}}, status)


def unauthorized() -> Response:
    return error(401, "global", "authError", "Invalid Credentials", location="Authorization", location_type="header")


def fault(queued: Fault) -> Response:
    domain = "usageLimits" if queued.status in (403, 429) else "global"
    response = error(queued.status, domain, queued.reason, "Rate Limit Exceeded")
    if queued.retry_after is not None:
        response.headers["Retry-After"] = queued.retry_after
    return response


# ---- wire format -------------------------------------------------------------------------------


def render(e: FakeEvent) -> dict[str, Any]:
    """The event as Google lists it (also what the edit control answers)."""
    if e.deleted:
        # A deleted event is only guaranteed its id.
        return {"kind": "calendar#event", "etag": f'"{e.seq}"', "id": e.id, "status": "cancelled"}
    head = {"kind": "calendar#event", "etag": f'"{e.seq}"', "id": e.id}
    times = {
        "updated": utc_millis(e.updated),
        "start": content.google_time(e.start, e.time_zone),
        "end": content.google_time(e.end, e.time_zone),
    }
    return head | e.body | times


def _rfc3339(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"Bad Request: {value!r} has no time zone offset")
    return parsed.astimezone(UTC)


def _fingerprint(query: dict[str, str]) -> tuple[tuple[str, str], ...]:
    # A pageToken is only valid with the query that produced it.
    return tuple(sorted((k, v) for k, v in query.items() if k != "pageToken"))
