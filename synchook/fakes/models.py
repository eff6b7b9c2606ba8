"""What the fakes hold: accounts, their calendars and events, queued faults, and the requests they were sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from synchook.fakes._common import utc

GOOGLE, MICROSOFT = "google", "microsoft"


@dataclass
class FakeEvent:
    """One event; `body` holds its provider fields as they go on the wire (PROVIDERS.md §5).

    Start and end are kept apart, as instants (or dates for all-day events) in `time_zone`, because
    they decide the listing window and Graph renders them in the zone a request prefers. Everything
    else (summary/subject, attendees, organizer, ...) sits in `body` in the provider's own spelling,
    so an edit through the control call is exactly the provider field a real edit changes.
    """

    id: str
    body: dict[str, Any]
    start: datetime | date
    end: datetime | date
    updated: datetime
    seq: int
    deleted: bool = False
    time_zone: str | None = None  # IANA or Windows name the event was created in; None: plain UTC

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, datetime)

    @property
    def summary(self) -> str | None:
        return self.body.get("summary", self.body.get("subject"))

    def bounds(self) -> tuple[datetime, datetime]:
        return utc(self.start), utc(self.end)


@dataclass
class FakeCalendar:
    id: str
    name: str
    events: dict[str, FakeEvent] = field(default_factory=dict)
    seq: int = 0  # position of the newest change; every event remembers the seq of its last change
    epoch: int = 0  # bumped to invalidate every sync token / deltaLink / page token of this calendar
    gone_code: str = "SyncStateNotFound"


@dataclass
class FakeAccount:
    provider: str
    account: str
    access_token: str
    refresh_token: str
    calendars: dict[str, FakeCalendar] = field(default_factory=dict)
    revoked: bool = False


@dataclass
class RequestRecord:
    provider: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    account: str | None = None
    status: int = 0


@dataclass
class Fault:
    """An answer queued by `fail_next`, given instead of the next API call's."""

    status: int
    retry_after: str | None
    reason: str
