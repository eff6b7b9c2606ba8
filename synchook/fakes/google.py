"""Google Calendar v3: calendarList and events listings, their errors and wire format (PROVIDERS.md §1).

Sync tokens do not filter by the original window: changes outside it come too.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from synchook.fakes import content
from synchook.fakes._common import clamp, new_token, utc_millis
from synchook.fakes.models import GOOGLE, FakeAccount, FakeCalendar, FakeEvent, Fault
from synchook.fakes.paging import Owner, Snapshot
from synchook.fakes.state import ProviderState

GOOGLE_SYNC_INCOMPATIBLE = frozenset(
    {"iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin"}
)
_EVENTS, _CALENDARS = "calendar#events", "calendar#calendarList"


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
