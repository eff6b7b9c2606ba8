"""Microsoft Graph v1.0: calendars and calendarView delta, their errors and wire format (PROVIDERS.md §2).

DeltaLinks stay within their window and report events that left it as `@removed`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from synchook.fakes import content
from synchook.fakes._common import clamp, utc, utc_millis
from synchook.fakes.models import MICROSOFT, FakeAccount, FakeEvent, Fault
from synchook.fakes.paging import Snapshot, Window
from synchook.fakes.state import ProviderState


def calendars(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    base = f"{_root(request)}/me/calendars"
    skip = request.query_params.get("$skiptoken")
    if skip is not None:
        found = fakes.pager.pages.get(skip)
        if found is None or found[0].owner != (MICROSOFT, acc.account, ""):
            return error(400, "ErrorInvalidParameter", "Invalid skip token.")
        snap, offset = found
    else:
        items = [
            {"id": c.id, "name": c.name, "canEdit": True, "owner": {"name": acc.account, "address": acc.account}}
            for c in acc.calendars.values()
        ]
        snap, offset = Snapshot((MICROSOFT, acc.account, ""), 0, items, {}), 0
    return _serve(fakes, snap, offset, _maxpagesize(request, fakes.page_size[MICROSOFT]), base, "calendar")


def delta(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    cal = acc.calendars.get(request.path_params["calendar_id"])
    if cal is None:
        return error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    owner = (MICROSOFT, acc.account, cal.id)
    base = f"{_root(request)}/me/calendars/{quote(cal.id, safe='')}/calendarView/delta"
    size = _maxpagesize(request, fakes.page_size[MICROSOFT])
    query = request.query_params
    gone = error(410, cal.gone_code, "The sync state generation is not found or has expired.")
    if "$skiptoken" in query:
        found = fakes.pager.pages.get(query["$skiptoken"])
        if found is None or found[0].owner != owner or found[0].epoch != cal.epoch:
            return gone
        return _serve(fakes, found[0], found[1], size, base, "event")
    if "$deltatoken" in query:
        cursor = fakes.pager.cursors.get(query["$deltatoken"])
        if cursor is None or cursor.owner != owner or cursor.epoch != cal.epoch or cursor.window is None:
            return gone
        window = cursor.window
        changed = sorted((e for e in cal.events.values() if e.seq > cursor.seq), key=lambda e: e.seq)
        zone = _prefer_zone(request)
        items = [render(e, zone) if _overlaps(e, window) and not e.deleted else _removed(e) for e in changed]
    else:
        try:
            window = (_time(query.get("startDateTime")), _time(query.get("endDateTime")))
        except ValueError:
            return error(
                400, "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters "
                "StartDateTime and EndDateTime.",
            )  # fmt: skip
        live = sorted((e for e in cal.events.values() if not e.deleted and _overlaps(e, window)), key=lambda e: e.seq)
        items = [render(e, _prefer_zone(request)) for e in live]
    if fakes.pager.duplicates and items:
        # The same change can appear twice in one round; clients must tolerate it.
        items += items[: fakes.pager.duplicates]
        fakes.pager.duplicates = 0
    delta_token = fakes.pager.new_cursor(owner, cal, window)
    snap = Snapshot(owner, cal.epoch, items, {"@odata.deltaLink": f"{base}?$deltatoken={delta_token}"})
    return _serve(fakes, snap, 0, size, base, "event")


def _serve(fakes: ProviderState, snap: Snapshot, offset: int, size: int, base: str, entity: str) -> Response:
    body: dict[str, Any] = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#Collection({entity})"}
    items, next_page = fakes.pager.page(snap, offset, size)
    if next_page is not None:
        body["@odata.nextLink"] = f"{base}?$skiptoken={next_page}"
    else:
        body.update(snap.final)
    body["value"] = items
    return JSONResponse(body, headers={"Preference-Applied": f"odata.maxpagesize={size}"})


def _root(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/graph/v1.0"


# ---- errors ------------------------------------------------------------------------------------


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    inner = {"request-id": secrets.token_hex(8), "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    return JSONResponse({"error": {"code": code, "message": message, "innerError": inner}}, status, headers=headers)


def unauthorized() -> Response:
    return error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")


def fault(queued: Fault) -> Response:
    headers = {"Retry-After": queued.retry_after} if queued.retry_after is not None else None
    code = {429: "TooManyRequests", 503: "ServiceNotAvailable"}.get(queued.status, "generalException")
    return error(queued.status, code, "Too many requests or service unavailable.", headers)


# ---- wire format -------------------------------------------------------------------------------


def render(e: FakeEvent, prefer_zone: str | None = None) -> dict[str, Any]:
    """The event as Graph lists it: times in the zone the request prefers, else in the event's own."""
    zone = prefer_zone or e.time_zone or "UTC"
    head = {"@odata.type": "#microsoft.graph.event", "@odata.etag": f'W/"{e.seq}"', "id": e.id}
    times = {
        "lastModifiedDateTime": utc_millis(e.updated),
        "isAllDay": e.all_day,
        "start": content.graph_time(e.start, zone),
        "end": content.graph_time(e.end, zone),
    }
    return head | e.body | times


def _removed(e: FakeEvent) -> dict[str, Any]:
    # Covers deletions and events moved outside the deltaLink's window alike.
    return {"@odata.type": "#microsoft.graph.event", "id": e.id, "@removed": {"reason": "deleted"}}


def _time(value: str | None) -> datetime:
    if not value:
        raise ValueError("missing")
    return utc(datetime.fromisoformat(value))


def _overlaps(e: FakeEvent, window: Window) -> bool:
    start, end = e.bounds()
    return start < window[1] and end > window[0]


def _prefer_zone(request: Request) -> str | None:
    """`Prefer: outlook.timezone="UTC"`: Graph then writes every time in that zone."""
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "outlook.timezone" and value.strip('"'):
            return value.strip('"')
    return None


def _maxpagesize(request: Request, default: int) -> int:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "odata.maxpagesize":
            return clamp(value, default, 1000)
    return default
