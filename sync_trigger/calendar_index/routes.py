"""The calendar index over HTTP: GET /v1/calendar/events (§6.1 events), /calendars and the change feed /changes.

Events: order `start` ascending, then `id`; `next_cursor` continues after the last event of the page.
`since` keeps events that end after it, `until` events that start before it (so together: the
events overlapping [since, until)). Both are ISO 8601; a date alone means 00:00 UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from sync_trigger.calendar_index import changes, service
from sync_trigger.calendar_index.models import Calendar, CalendarChange
from sync_trigger.push import service as push
from sync_trigger.push.views import PushView
from synchook.auth.models import Scope
from synchook.errors import DomainError, ValidationFailed
from synchook.http.endpoint import Call, Endpoint, Page
from synchook.http.fields import IsoDateTime
from synchook.http.pagination import (
    DEFAULT_LIMIT,
    Limit,
    PageQuery,
    decode_cursor,
    encode_cursor,
    next_cursor,
    page_limit,
)
from synchook.http.wire import Timestamp, Wire
from synchook.providers import Provider

FEED_MAX_LIMIT = 1000
FEED_DEFAULT_LIMIT = 100


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


_ID = 40
ConnectionFilter = Annotated[str, Field(min_length=1, max_length=_ID, description="Only this connection's (conn_…)")]
CalendarFilter = Annotated[str, Field(min_length=1, max_length=_ID, description="Only this calendar's (cal_…)")]


class EventsQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: Limit = DEFAULT_LIMIT
    cursor: EventCursor | None = Field(default=None, description="The next_cursor of the previous page")
    calendar_id: CalendarFilter | None = None
    connection_id: ConnectionFilter | None = None
    since: IsoDateTime | None = Field(default=None, description="Only events that end after this")
    until: IsoDateTime | None = Field(default=None, description="Only events that start before this")

    @model_validator(mode="after")
    def _ordered(self) -> EventsQuery:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise PydanticCustomError("since", "since: must precede until")
        return self


class EventTimeView(Wire):
    date_time: Timestamp | None = Field(description="Timed events: the instant, UTC")
    date: dt.date | None = Field(description="All-day events: the date")
    time_zone: str | None


class PersonView(Wire):
    email: str | None
    name: str | None


class AttendeeView(Wire):
    email: str | None
    name: str | None
    response: Literal["accepted", "declined", "tentative", "needs_action"]
    optional: bool


class NormalizedEventView(Wire):
    """The normalised event (CONTRACT §6.1), the same for every provider."""

    id: str = Field(pattern="^cev_")
    calendar_id: str = Field(pattern="^cal_")
    connection_id: str = Field(pattern="^conn_")
    provider: Provider
    provider_event_id: str
    ical_uid: str | None
    title: str | None
    description: str | None
    location: str | None
    start: EventTimeView | None
    end: EventTimeView | None
    all_day: bool
    status: Literal["confirmed", "tentative", "cancelled"]
    busy: bool
    organizer: PersonView | None
    attendees: list[AttendeeView]
    recurring_event_id: str | None
    original_start: EventTimeView | None
    conference_url: str | None
    html_link: str | None
    updated_at: Timestamp | None


async def list_events(call: Call[EventsQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await service.list_events(
            session,
            workspace_id=call.workspace_id,
            limit=query.limit,
            calendar_id=query.calendar_id,
            connection_id=query.connection_id,
            since=query.since,
            until=query.until,
            after=query.cursor,
        )
    shown = rows[: query.limit]
    cursor = encode_cursor(shown[-1][0].encode()) if len(rows) > query.limit else None
    return Page([NormalizedEventView.model_validate(event) for _, event in shown], cursor)


# --- Calendars -------------------------------------------------------------------------------------


class CalendarsQuery(PageQuery):
    connection_id: ConnectionFilter | None = None


class CalendarView(Wire):
    id: str = Field(pattern="^cal_")
    connection_id: str = Field(pattern="^conn_")
    provider: Provider
    provider_calendar_id: str
    name: str
    push: PushView
    synced_at: Timestamp | None

    @classmethod
    def of(cls, calendar: Calendar, push: PushView | None = None) -> CalendarView:
        return cls(
            id=calendar.id,
            connection_id=calendar.connection_id,
            provider=Provider(calendar.provider),
            provider_calendar_id=calendar.calendar_id,
            name=calendar.name,
            push=push or PushView.off(),  # no channel: polled only
            synced_at=calendar.synced_at,
        )


async def list_calendars(call: Call[CalendarsQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await service.list_calendars(
            session,
            workspace_id=call.workspace_id,
            limit=query.limit,
            after_id=query.after_id,
            connection_id=query.connection_id,
        )
        shown = rows[: query.limit]
        views = await push.calendar_push(session, settings=call.ctx.settings, calendar_ids=[c.id for c in shown])
    items: list[BaseModel] = [CalendarView.of(c, views.get(c.id)) for c in shown]
    return Page(items, next_cursor([c.id for c in rows], query.limit))


# --- The change feed (§6.3) ------------------------------------------------------------------------


def _sequence(value: object) -> int:
    message = "must be a non-negative integer (a sequence of the change feed)"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("after", message)
    text = str(value)
    if not text.isdigit() or len(text) > 18:
        raise PydanticCustomError("after", message)
    return int(text)


class ChangesQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    after: Annotated[int, BeforeValidator(_sequence), Field(ge=0)] = Field(
        default=0, description="The next_after of the previous call: changes with a higher sequence follow"
    )
    limit: Annotated[int, page_limit(FEED_MAX_LIMIT), Field(ge=1, le=FEED_MAX_LIMIT)] = Field(
        default=FEED_DEFAULT_LIMIT, description="Page size (1–1000)"
    )
    connection_id: ConnectionFilter | None = None
    calendar_id: CalendarFilter | None = None


class ChangeView(Wire):
    sequence: int
    type: Literal["created", "updated", "deleted"]
    occurred_at: Timestamp
    job_id: str | None
    connection_id: str
    calendar_id: str
    initial: bool
    event: NormalizedEventView
    changed_fields: list[str]
    previous: dict[str, Any] | None = Field(description="The old values of changed_fields (created: null)")

    @classmethod
    def of(cls, change: CalendarChange) -> ChangeView:
        return cls(
            sequence=change.sequence,
            type=change.type,  # type: ignore[arg-type]
            occurred_at=change.occurred_at,
            job_id=change.job_id,
            connection_id=change.connection_id,
            calendar_id=change.calendar_id,
            initial=change.initial,
            event=NormalizedEventView.model_validate(change.event),
            changed_fields=list(change.changed_fields),
            previous=change.previous,
        )


class ChangeFeed(Wire):
    """The whole answer of GET /v1/calendar/changes (not the usual list envelope)."""

    data: list[ChangeView]
    next_after: int = Field(description="The last sequence returned (or `after` when none): pass it as `after`")
    has_more: bool


async def list_changes(call: Call[ChangesQuery, None]) -> ChangeFeed:
    query = call.query
    async with call.ctx.db.session() as session:
        latest, purged_through = await changes.latest_sequence(session, call.workspace_id)
        if query.after > latest:
            raise ValidationFailed(f"after: is above the latest sequence of this workspace ({latest})", field="after")
        if query.after < purged_through:
            raise DomainError(
                f"Changes after {query.after} are past retention; re-read GET /v1/calendar/events, "
                f"then follow the feed from after={latest}",
                code="cursor_expired",
                status=410,
            )
        rows = await changes.list_changes(
            session,
            workspace_id=call.workspace_id,
            after=query.after,
            limit=query.limit,
            connection_id=query.connection_id,
            calendar_id=query.calendar_id,
        )
    shown = rows[: query.limit]
    return ChangeFeed(
        data=[ChangeView.of(c) for c in shown],
        next_after=shown[-1].sequence if shown else query.after,
        has_more=len(rows) > query.limit,
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="GET",
        path="/v1/calendar/events",
        handler=list_events,
        summary="List synced calendar events (normalised)",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        query=EventsQuery,
        response=NormalizedEventView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path="/v1/calendar/calendars",
        handler=list_calendars,
        summary="List indexed calendars",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        query=CalendarsQuery,
        response=CalendarView,
        many=True,
    ),
    Endpoint(
        method="GET",
        path="/v1/calendar/changes",
        handler=list_changes,
        summary="The change feed: every change of the workspace's calendars, in sequence order",
        description="Answers `{data, next_after, has_more}`; keep calling with `after=next_after`. "
        "410 `cursor_expired` when `after` is older than the oldest kept change.",
        tag="calendar",
        scope=Scope.READ_CALENDAR,
        query=ChangesQuery,
        response=ChangeFeed,
        envelope=False,
        errors=(410,),
    ),
]
