"""Microsoft Graph v1.0: calendars and calendarView delta, their errors and wire format (PROVIDERS.md §2).

DeltaLinks stay within their window and report events that left it as `@removed`.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from synchook.fakes import content
from synchook.fakes._common import clamp, utc, utc_millis
from synchook.fakes.models import MICROSOFT, FakeAccount, FakeEvent, Fault
from synchook.fakes.paging import Snapshot, Window
from synchook.fakes.push import (
    APPLICATION_ID,
    GRAPH_CLOCK_SLACK,
    GRAPH_MAX_AHEAD,
    PushChannel,
    parse_graph_time,
    user_id,
)
from synchook.fakes.state import ProviderState

_CHANGE_TYPES = ("created", "updated", "deleted")


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


# ---- subscriptions (PROVIDERS.md §2.5) ---------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def create_subscription(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`POST /subscriptions`: validates each URL (the handshake) before answering 201.

    Async and outside the state lock: the handshake waits on the client's own endpoint, which may be
    served by the very process that is waiting for this answer.
    """
    try:
        sub = _new_subscription(request.state.body, acc)
    except _Invalid as exc:
        return error(exc.status, exc.code, exc.message)
    urls = [sub.address] + ([sub.lifecycle_url] if sub.lifecycle_url else [])
    problems = await asyncio.gather(*(asyncio.wrap_future(fakes.push.sender.run(fakes.push.validate(u))) for u in urls))
    failed = [p for p in problems if p]
    if failed:
        return error(400, "ValidationError", failed[0])
    sub.created = datetime.now(UTC)
    fakes.push.add(sub)
    return JSONResponse(_subscription_json(sub, request), 201)


def get_subscription(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    sub = _own(fakes, request, acc)
    return _subscription_json_response(sub, request) if sub else _not_found()


def update_subscription(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`PATCH /subscriptions/{id}` `{"expirationDateTime"}` → 200; 404 if unknown, deleted or expired."""
    sub = _own(fakes, request, acc)
    if sub is None:
        return _not_found()
    body = request.state.body
    if body is None:
        return error(400, "BadRequest", "Unable to read JSON request payload.")
    try:
        expiration = _expiration(body.get("expirationDateTime"))
    except _Invalid as exc:
        return error(exc.status, exc.code, exc.message)
    sub.expiration = expiration
    return _subscription_json_response(sub, request)


def reauthorize_subscription(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`POST /subscriptions/{id}/reauthorize` → 204 (the answer to `reauthorizationRequired`)."""
    return Response(status_code=204) if _own(fakes, request, acc) else _not_found()


def delete_subscription(fakes: ProviderState, request: Request, acc: FakeAccount) -> Response:
    """`DELETE /subscriptions/{id}` → 204; 404 if unknown, deleted or expired."""
    sub = _own(fakes, request, acc)
    if sub is None:
        return _not_found()
    sub.state = "stopped"
    return Response(status_code=204)


def _own(fakes: ProviderState, request: Request, acc: FakeAccount) -> PushChannel | None:
    """The live subscription of this mailbox; a subscription past its expiry is gone."""
    sub = fakes.push.get(MICROSOFT, request.path_params["subscription_id"])
    return sub if sub is not None and sub.live() and sub.account == acc.account else None


def _not_found() -> Response:
    return error(404, "ResourceNotFound", "The object was not found.")


def _new_subscription(body: dict[str, Any] | None, acc: FakeAccount) -> PushChannel:
    if body is None:
        raise _Invalid(400, "BadRequest", "Unable to read JSON request payload.")
    change_type, url, lifecycle = (
        body.get("changeType"),
        body.get("notificationUrl"),
        body.get("lifecycleNotificationUrl"),
    )
    resource, client_state = body.get("resource"), body.get("clientState")
    if not isinstance(change_type, str) or not change_type:
        raise _Invalid(400, "InvalidRequest", "changeType is required.")
    changes = tuple(part.strip() for part in change_type.split(","))
    if any(part not in _CHANGE_TYPES for part in changes):
        raise _Invalid(400, "InvalidRequest", f"Invalid changeType: {change_type[:80]}.")
    for name, value in (("notificationUrl", url), ("lifecycleNotificationUrl", lifecycle)):
        if value is None and name == "lifecycleNotificationUrl":
            continue
        # Graph takes https only; http is allowed here for loopback tests.
        if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http") or not urlsplit(value).netloc:
            raise _Invalid(400, "InvalidRequest", f"{name} must be an absolute https URL.")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise _Invalid(400, "InvalidRequest", "clientState must be a string of at most 128 characters.")
    calendar_id = _calendar_of(resource)
    if calendar_id not in acc.calendars:
        raise _Invalid(404, "ResourceNotFound", f"Resource not found: {str(resource)[:120]}")
    assert isinstance(url, str) and isinstance(resource, str)  # checked above
    return PushChannel(
        MICROSOFT, str(uuid.uuid4()), acc.account, calendar_id, url, _expiration(body.get("expirationDateTime")),
        client_state, resource=resource, lifecycle_url=lifecycle, change_types=changes,
    )  # fmt: skip


def _calendar_of(resource: object) -> str:
    """`me/calendars/{id}/events` (a leading slash and a percent-encoded id are fine) → the calendar id."""
    if not isinstance(resource, str):
        raise _Invalid(400, "InvalidRequest", "resource is required.")
    parts = resource.strip("/").split("/")
    if len(parts) != 4 or parts[0].lower() != "me" or parts[1].lower() != "calendars" or parts[3].lower() != "events":
        raise _Invalid(
            400, "InvalidRequest", f"Unsupported resource: {resource[:120]} (want me/calendars/{{id}}/events)"
        )
    return unquote(parts[2])


def _expiration(value: object) -> datetime:
    """An expirationDateTime in the future, at most 4,230 minutes ahead (Outlook events)."""
    try:
        expiration = parse_graph_time(value)
    except ValueError:
        raise _Invalid(400, "InvalidRequest", "expirationDateTime is required (ISO 8601).") from None
    now = datetime.now(UTC)
    if expiration <= now:
        raise _Invalid(400, "InvalidRequest", "Subscription expiration must be in the future.")
    if expiration > now + GRAPH_MAX_AHEAD + GRAPH_CLOCK_SLACK:
        raise _Invalid(400, "InvalidRequest", "Subscription expiration can only be 4230 minutes in the future.")
    return expiration


def _subscription_json_response(sub: PushChannel, request: Request) -> Response:
    return JSONResponse(_subscription_json(sub, request))


def _subscription_json(sub: PushChannel, request: Request) -> dict[str, Any]:
    return {
        "@odata.context": f"{_root(request)}/$metadata#subscriptions/$entity",
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": APPLICATION_ID,
        "changeType": ",".join(sub.change_types),
        "clientState": sub.token,
        "notificationUrl": sub.address,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": utc_millis(sub.expiration),
        "creatorId": user_id(sub.account),
        "includeResourceData": False,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }


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
