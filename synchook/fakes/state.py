"""What the tests set and read: accounts, calendars, events, injected faults, counters, the request log and push."""

from __future__ import annotations

import asyncio
import copy
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from synchook.fakes import content
from synchook.fakes._common import utc
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount, FakeCalendar, FakeEvent, Fault, RequestRecord
from synchook.fakes.oauth import TokenBook, new_secret
from synchook.fakes.paging import Pager
from synchook.fakes.push import PushChannel, PushDelivery, PushHub


class ProviderState:
    """Everything the fake servers answer from; every change happens under `_lock`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.push = PushHub(self._lock)
        self.reset()

    def reset(self) -> None:
        """Forget every account, token, fault and counter (the server keeps running)."""
        with self._lock:
            self._accounts: dict[tuple[str, str], FakeAccount] = {}
            self.tokens = TokenBook()
            self.pager = Pager()
            self._faults: dict[str, deque[Fault]] = {GOOGLE: deque(), MICROSOFT: deque()}
            self._requests: list[RequestRecord] = []
            self._in_flight: Counter[tuple[str, str]] = Counter()
            self._max_in_flight: Counter[tuple[str, str]] = Counter()
            self.page_size = {GOOGLE: 250, MICROSOFT: 10}
            self.access_ttl = 3600
            self.latency = 0.0
            self.push.reset()

    def add_account(
        self,
        provider: str,
        account: str = "alice@example.com",
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        expires_in: float | None = None,
        calendars: int = 1,
    ) -> FakeAccount:
        """A mailbox with `calendars` calendars (ids "primary"-like: the account's address, then cal-N)."""
        with self._lock:
            acc = FakeAccount(
                provider,
                account,
                access_token or new_secret(provider, "at"),
                refresh_token or new_secret(provider, "rt"),
            )
            self._accounts[(provider, account)] = acc
            self.tokens.add(acc, self.access_ttl if expires_in is None else expires_in)
            for n in range(calendars):
                self.add_calendar(provider, account, account if n == 0 else f"cal-{n}", name=f"Calendar {n}")
            return acc

    def account(self, provider: str, account: str = "alice@example.com") -> FakeAccount:
        with self._lock:
            return self._accounts[(provider, account)]

    def add_calendar(self, provider: str, account: str, calendar_id: str, *, name: str = "Calendar") -> str:
        with self._lock:
            self._accounts[(provider, account)].calendars[calendar_id] = FakeCalendar(calendar_id, name)
            return calendar_id

    def put_event(
        self,
        provider: str,
        account: str,
        calendar_id: str,
        event_id: str | None = None,
        *,
        summary: str = "Event",
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        **details: Any,
    ) -> str:
        """Create or update an event (one change-log entry); all-day when start/end are dates.

        `details` are the other §5 fields, provider-neutral (see `content.EventSpec`): time_zone,
        description, location, organizer=(email, name), attendees=[{"email", "name", "response",
        "optional"}], conference_url, recurring_event_id, original_start, status, busy, and `fields`
        (raw provider fields laid over the rest). An update keeps the fields it does not name.
        """
        spec = content.EventSpec(**details)
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            cal.seq += 1
            old = cal.events.get(event_id or "")
            change = "updated" if old is not None and not old.deleted else "created"
            start = start or (old.start if old else datetime(2024, 5, 2, 9, tzinfo=UTC))
            end = end or (old.end if old else utc(start) + timedelta(minutes=30))
            event_id = event_id or _new_id(provider)
            build = content.google_body if provider == GOOGLE else content.graph_body
            defaults = content.google_defaults if provider == GOOGLE else content.graph_defaults
            body = old.body if old else defaults(event_id, account)
            time_zone = spec.time_zone or (old.time_zone if old else None)
            cal.events[event_id] = FakeEvent(
                event_id, body | build(summary, spec, event_id), start, end, datetime.now(UTC), cal.seq,
                time_zone=time_zone,
            )  # fmt: skip
            self.push.event_changed(provider, account, calendar_id, cal.events[event_id], change)
            return event_id

    def edit_event(self, provider: str, account: str, calendar_id: str, event_id: str, changes: dict[str, Any]) -> None:
        """A real edit: provider fields (`{"summary": "New"}`, `{"attendees": [...]}`) laid over the event.

        Bumps `updated` and the change log, so the next syncToken / deltaLink round reports it.
        ValueError for fields the provider sets itself, KeyError for an unknown or deleted event.
        """
        self._change_event(provider, account, calendar_id, event_id, lambda e: content.apply_edit(provider, e, changes))

    def set_attendee_response(
        self, provider: str, account: str, calendar_id: str, event_id: str, email: str, response: str
    ) -> None:
        """One attendee answers (`accepted`, `declined`, `tentative`, `needs_action` or the provider's word)."""
        self._change_event(
            provider, account, calendar_id, event_id, lambda e: content.set_response(provider, e, email, response)
        )

    def add_series(
        self,
        provider: str,
        account: str,
        calendar_id: str,
        count: int,
        *,
        summary: str = "Weekly",
        first: datetime,
        every: timedelta = timedelta(days=7),
        length: timedelta = timedelta(minutes=30),
        **details: Any,
    ) -> tuple[str, list[str]]:
        """A recurring series as a listing with expanded instances shows it: `count` instances; (series id, ids).

        Google instance ids are `{series}_{start as YYYYMMDDTHHMMSSZ}` (recurringEventId + originalStartTime);
        Graph occurrences have ids of their own and carry seriesMasterId + originalStart.
        """
        series = _new_id(provider)
        ids = []
        for n in range(count):
            start = first + n * every
            instance = f"{series}_{utc(start).strftime('%Y%m%dT%H%M%SZ')}" if provider == GOOGLE else None
            ids.append(
                self.put_event(
                    provider,
                    account,
                    calendar_id,
                    instance,
                    summary=summary,
                    start=start,
                    end=start + length,
                    recurring_event_id=series,
                    original_start=start,
                    **details,
                )
            )
        return series, ids

    def add_events(
        self, provider: str, account: str, calendar_id: str, count: int, *, first: datetime | None = None
    ) -> list[str]:
        """`count` half-hour events an hour apart from `first`."""
        first = first or datetime(2024, 5, 1, tzinfo=UTC)
        return [
            self.put_event(provider, account, calendar_id, summary=f"Event {n}", start=first + timedelta(hours=n))
            for n in range(count)
        ]

    def seed_demo(self, provider: str, account: str, calendar_id: str, *, first: datetime) -> dict[str, str]:
        """The demo mix of the dev server: an all-day event, a weekly series, a meeting with attendees,
        organizer, location, description and a conference link, and an event in Europe/Zurich. Returns their ids."""
        day = utc(first).date() + timedelta(days=1)
        meet = (
            "https://meet.google.com/abc-defg-hij"
            if provider == GOOGLE
            else "https://teams.microsoft.com/l/meetup-join/19%3ameeting_demo"
        )
        ids = {
            "all_day": self.put_event(
                provider, account, calendar_id, summary="Company offsite", start=day, end=day + timedelta(days=1),
                busy=False,
            ),
            "meeting": self.put_event(
                provider, account, calendar_id, summary="Design review", start=first + timedelta(hours=3),
                end=first + timedelta(hours=4), description="Agenda: the new sync view.", location="Room 4.01",
                organizer=(account, "Alice"), conference_url=meet,
                attendees=[
                    {"email": account, "name": "Alice", "response": "accepted"},
                    {"email": "bob@example.com", "name": "Bob", "response": "needs_action"},
                    {"email": "carol@example.com", "name": "Carol", "response": "tentative", "optional": True},
                ],
            ),
            "zoned": self.put_event(
                provider, account, calendar_id, summary="Zurich lunch", start=first + timedelta(days=2, hours=2),
                end=first + timedelta(days=2, hours=3), time_zone="Europe/Zurich",
            ),
        }  # fmt: skip
        ids["series"], instances = self.add_series(
            provider, account, calendar_id, 4, summary="Weekly 1:1", first=first + timedelta(hours=6)
        )
        ids.update({f"instance_{n}": instance for n, instance in enumerate(instances)})
        return ids

    def delete_event(self, provider: str, account: str, calendar_id: str, event_id: str) -> None:
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            cal.seq += 1
            event = cal.events[event_id]
            event.deleted, event.seq, event.updated = True, cal.seq, datetime.now(UTC)
            self.push.event_changed(provider, account, calendar_id, event, "deleted")

    def _change_event(
        self, provider: str, account: str, calendar_id: str, event_id: str, change: Callable[[FakeEvent], None]
    ) -> None:
        """Change a copy of a live event, then store it as the calendar's newest change.

        The copy keeps a failed edit (ValueError, KeyError) from leaving the event half changed.
        """
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            if cal.events[event_id].deleted:
                raise KeyError(event_id)
            edited = copy.deepcopy(cal.events[event_id])
            change(edited)
            cal.seq += 1
            edited.seq, edited.updated = cal.seq, datetime.now(UTC)
            cal.events[event_id] = edited
            self.push.event_changed(provider, account, calendar_id, edited, "updated")

    def invalidate_sync_tokens(
        self, provider: str, account: str, calendar_id: str, *, graph_code: str = "SyncStateNotFound"
    ) -> None:
        """Every sync token / deltaLink / page token of the calendar now answers 410 (Graph with `graph_code`)."""
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            cal.epoch += 1
            cal.gone_code = graph_code

    def expire_access_tokens(self, provider: str, account: str = "alice@example.com") -> None:
        with self._lock:
            self.tokens.expire(provider, account)

    def revoke_refresh_token(self, provider: str, account: str = "alice@example.com") -> None:
        """The token endpoint answers invalid_grant for this account from now on."""
        with self._lock:
            self._accounts[(provider, account)].revoked = True

    def fail_next(self, provider: str, count: int = 1, *, status: int = 429, retry_after: float | None = None) -> None:
        """The next `count` API calls to `provider` fail: 429, 403 (Google userRateLimitExceeded), 500, 503."""
        reason = {429: "rateLimitExceeded", 403: "userRateLimitExceeded", 500: "backendError", 503: "backendError"}
        with self._lock:
            fault = Fault(status, None if retry_after is None else f"{retry_after:g}", reason.get(status, "error"))
            self._faults[provider].extend([fault] * count)

    def inject_empty_pages(self, provider: str, count: int = 1) -> None:
        """The next `count` listing pages come back empty but still point onward (same position)."""
        with self._lock:
            self.pager.empty_pages[provider] += count

    def duplicate_next_delta_changes(self, count: int = 1) -> None:
        """The next Graph delta round repeats its first `count` changes at its end."""
        with self._lock:
            self.pager.duplicates = count

    # ---- push (PROVIDERS.md §1.5, §2.5; see synchook.fakes.push) ---------------------------

    def push_channels(
        self, provider: str | None = None, *, calendar_id: str | None = None, include_ended: bool = False
    ) -> list[PushChannel]:
        """Live Google channels / Graph subscriptions (copies, oldest first); stopped, removed and
        expired ones too with `include_ended` (their `status` says which)."""
        return self.push.list(provider, calendar_id=calendar_id, include_ended=include_ended)

    def drop_notifications(self, drop: bool = True) -> None:
        """Lose every change notification from now on (the `sync` message, the handshake and lifecycle still go)."""
        self.push.drop = drop

    def duplicate_notifications(self, duplicate: bool = True) -> None:
        """Graph sends every change notification twice from now on."""
        self.push.duplicate = duplicate

    def expire_push_channel(self, provider: str, channel_id: str) -> None:
        """The channel / subscription is past its expiry now: no more notifications, Graph PATCH/DELETE 404."""
        self.push.expire(provider, channel_id)

    def send_lifecycle(self, subscription_id: str, event: str) -> None:
        """A Graph lifecycle notification: reauthorizationRequired | subscriptionRemoved (also ends it) | missed."""
        self.push.lifecycle(subscription_id, event)

    def send_google_message(self, channel_id: str, state: str = "exists") -> None:
        """A Google message of `state` (exists | not_exists | sync) on a live channel, without a change."""
        self.push.google_message(channel_id, state)

    def push_deliveries(self, provider: str | None = None, kind: str | None = None) -> list[PushDelivery]:
        """Every outbound push request since the last reset (and every dropped one, `dropped=True`)."""
        with self._lock:
            return [
                d
                for d in self.push.deliveries
                if (provider is None or d.provider == provider) and (kind is None or d.kind == kind)
            ]

    def settle_push(self, timeout: float = 10.0) -> None:
        """Block until every scheduled push request has been answered (or failed). From sync code only:
        an async test whose own loop serves the receiver awaits `asettle_push` instead."""
        self.push.sender.run(self.push.sender.idle()).result(timeout)

    async def asettle_push(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.wrap_future(self.push.sender.run(self.push.sender.idle()))

    # ---- counters -------------------------------------------------------------------------

    def requests(self, provider: str | None = None, path_contains: str = "") -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self._requests if (provider is None or r.provider == provider) and path_contains in r.path
            ]

    def max_in_flight(self, provider: str, account: str = "alice@example.com") -> int:
        with self._lock:
            return self._max_in_flight[(provider, account)]


def _new_id(provider: str) -> str:
    return secrets.token_hex(13) if provider == GOOGLE else "AAMk" + secrets.token_urlsafe(24)
