"""GET /v1/calendar/events: the indexed events of the caller's workspace, by start time.

Order: `start` ascending, then `id`; `next_cursor` continues after the last event of the page.
`since` keeps events that end after it, `until` events that start before it (so together: the
events overlapping [since, until)). Both are ISO 8601; a date alone means 00:00 UTC.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from sync_trigger.calendar_index import service
from sync_trigger.calendar_index.models import PROVIDER_ID_LENGTH, CalendarEvent
from synchook.auth.models import Scope
from synchook.http.endpoint import Call, Endpoint, Page
from synchook.http.fields import IsoDateTime
from synchook.http.pagination import DEFAULT_LIMIT, Limit, decode_cursor, encode_cursor
from synchook.http.wire import Timestamp, Wire
from synchook.providers import Provider


def _position(cursor: object) -> service.EventPosition:
    if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
        raise PydanticCustomError("cursor", "invalid cursor")
    position = service.EventPosition.decode(decode_cursor(cursor))
    if position is None:
        raise PydanticCustomError("cursor", "invalid cursor")
    return position


_MAX_CURSOR = 512
EventCursor = Annotated[
    service.EventPosition,
    BeforeValidator(_position),
    WithJsonSchema({"type": "string", "maxLength": _MAX_CURSOR}),
]


class EventsQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: Limit = DEFAULT_LIMIT
    cursor: EventCursor | None = Field(default=None, description="The next_cursor of the previous page")
    calendar_id: str | None = Field(
        default=None, min_length=1, max_length=PROVIDER_ID_LENGTH, description="Only events of this calendar"
    )
    since: IsoDateTime | None = Field(default=None, description="Only events that end after this")
    until: IsoDateTime | None = Field(default=None, description="Only events that start before this")

    @model_validator(mode="after")
    def _ordered(self) -> EventsQuery:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise PydanticCustomError("since", "since: must precede until")
        return self


class CalendarEventView(Wire):
    id: str
    connection_id: str
    provider: Provider
    calendar_id: str
    event_id: str
    summary: str | None
    start: Timestamp
    end: Timestamp | None
    all_day: bool
    updated: Timestamp | None
    status: str

    @classmethod
    def of(cls, event: CalendarEvent) -> CalendarEventView:
        return cls(
            id=event.id,
            connection_id=event.connection_id,
            provider=Provider(event.provider),
            calendar_id=event.calendar_id,
            event_id=event.event_id,
            summary=event.summary,
            start=event.start,
            end=event.end,
            all_day=event.all_day,
            updated=event.updated,
            status=event.status,
        )


async def list_events(call: Call[EventsQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await service.list_events(
            session,
            workspace_id=call.workspace_id,
            limit=query.limit,
            calendar_id=query.calendar_id,
            since=query.since,
            until=query.until,
            after=query.cursor,
        )
    shown = rows[: query.limit]
    cursor = None
    if len(rows) > query.limit:
        last = shown[-1]
        cursor = encode_cursor(service.EventPosition(last.start, last.id).encode())
    return Page([CalendarEventView.of(e) for e in shown], cursor)


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="GET",
        path="/v1/calendar/events",
        handler=list_events,
        summary="List synced calendar events",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        query=EventsQuery,
        response=CalendarEventView,
        many=True,
    )
]
