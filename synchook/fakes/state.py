"""What the tests set and read: accounts, calendars, events, injected faults, counters and the request log."""

from __future__ import annotations

import secrets
import threading
from collections import Counter, deque
from datetime import UTC, date, datetime, timedelta

from synchook.fakes._common import utc
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount, FakeCalendar, FakeEvent, Fault, RequestRecord
from synchook.fakes.oauth import TokenBook, new_secret
from synchook.fakes.paging import Pager


class ProviderState:
    """Everything the fake servers answer from; every change happens under `_lock`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
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
    ) -> str:
        """Create or update an event (one change-log entry); all-day when start/end are dates."""
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            cal.seq += 1
            old = cal.events.get(event_id or "")
            start = start or (old.start if old else datetime(2024, 5, 2, 9, tzinfo=UTC))
            end = end or (old.end if old else utc(start) + timedelta(minutes=30))
            event_id = event_id or _new_id(provider)
            cal.events[event_id] = FakeEvent(event_id, summary, start, end, datetime.now(UTC), cal.seq)
            return event_id

    def add_events(
        self, provider: str, account: str, calendar_id: str, count: int, *, first: datetime | None = None
    ) -> list[str]:
        """`count` half-hour events an hour apart from `first`."""
        first = first or datetime(2024, 5, 1, tzinfo=UTC)
        return [
            self.put_event(provider, account, calendar_id, summary=f"Event {n}", start=first + timedelta(hours=n))
            for n in range(count)
        ]

    def delete_event(self, provider: str, account: str, calendar_id: str, event_id: str) -> None:
        with self._lock:
            cal = self._accounts[(provider, account)].calendars[calendar_id]
            cal.seq += 1
            event = cal.events[event_id]
            event.deleted, event.seq, event.updated = True, cal.seq, datetime.now(UTC)

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
