"""GET /v1/calendar/events: the indexed events of the caller's workspace, by start time.

Order: `start` ascending, then `id`; `next_cursor` continues after the last event of the page.
`since` keeps events that end after it, `until` events that start before it (so together: the
events overlapping [since, until)). Both are ISO 8601; a date alone means 00:00 UTC.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sync_trigger.calendar_index import service
from sync_trigger.calendar_index.models import PROVIDER_ID_LENGTH
from synchook.errors import ValidationFailed
from synchook.http.fields import datetime_param
from synchook.http.guard import app_context, authorize
from synchook.http.pagination import encode_cursor, page_request
from synchook.http.responses import page


async def list_events(request: Request) -> Response:
    principal = await authorize(request, "read:calendar")
    wanted = page_request(request)
    after = None
    if wanted.after_id is not None:
        after = service.EventPosition.decode(wanted.after_id)
        if after is None:
            raise ValidationFailed("cursor: invalid cursor", field="cursor")
    calendar_id = request.query_params.get("calendar_id")
    if calendar_id is not None and not 1 <= len(calendar_id) <= PROVIDER_ID_LENGTH:
        raise ValidationFailed(f"calendar_id: must be 1 to {PROVIDER_ID_LENGTH} characters", field="calendar_id")
    since = datetime_param(request.query_params, "since")
    until = datetime_param(request.query_params, "until")
    if since is not None and until is not None and since >= until:
        raise ValidationFailed("since: must precede until", field="since")
    async with app_context(request).db.session() as session:
        rows = await service.list_events(
            session,
            workspace_id=principal.workspace_id,
            limit=wanted.limit,
            calendar_id=calendar_id,
            since=since,
            until=until,
            after=after,
        )
    shown = rows[: wanted.limit]
    cursor = None
    if len(rows) > wanted.limit:
        last = shown[-1]
        cursor = encode_cursor(service.EventPosition(last.start, last.id).encode())
    return page([service.event_view(e) for e in shown], cursor)


ROUTES: list[BaseRoute] = [Route("/calendar/events", list_events, methods=["GET"])]
