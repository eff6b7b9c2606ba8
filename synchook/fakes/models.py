"""What the fakes hold: accounts, their calendars and events, queued faults, and the requests they were sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from synchook.fakes._common import utc

GOOGLE, MICROSOFT = "google", "microsoft"


@dataclass
class FakeEvent:
    id: str
    summary: str
    start: datetime | date
    end: datetime | date
    updated: datetime
    seq: int
    deleted: bool = False

    @property
    def all_day(self) -> bool:
        return not isinstance(self.start, datetime)

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
