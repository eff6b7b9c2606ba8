"""Protocol-faithful fakes of Google Calendar v3, Microsoft Graph v1.0 and both OAuth token endpoints.

One starlette app served by uvicorn on 127.0.0.1, port 0 by default, in a background thread, so
sync tests, async tests and other OS processes can all reach it. URLs (base = `FakeProviders.base_url`):

    SYNCHOOK_GOOGLE_API_URL       {base}/google          (the API is {base}/google/calendar/v3/...)
    SYNCHOOK_GOOGLE_TOKEN_URL     {base}/google/token
    SYNCHOOK_MICROSOFT_GRAPH_URL  {base}/graph/v1.0
    SYNCHOOK_MICROSOFT_TOKEN_URL  {base}/microsoft/token

`settings_env()` returns exactly these (plus the fake OAuth client ids/secrets).

What it reproduces (PROVIDERS.md §4): opaque page/sync tokens that point at a position in a
per-calendar change log; `nextSyncToken` only on the last page; injectable empty pages that
still carry `nextPageToken` / `@odata.nextLink`; 410 with the exact envelopes for unknown or
invalidated sync tokens / deltaLinks; 400 for `syncToken` next to an incompatible parameter and
for a `pageToken` replayed with a different query; deletions as `{"id","status":"cancelled"}` /
`{"id","@removed":{...}}`; Google 403 `userRateLimitExceeded`, 429, 5xx and Graph 429 with
`Retry-After`; 401 for expired access tokens; `invalid_grant`; Microsoft refresh-token rotation;
duplicated delta changes; per-mailbox in-flight counts and a log of every request.

Google sync tokens do not filter by the original window (changes outside it come too); Graph
deltaLinks stay within their window and report events that left it as `@removed`.

Manual runs: `python -m tests.fakes.providers --port 8555 --seed` prints the URLs and tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GOOGLE, MICROSOFT = "google", "microsoft"
CLIENTS = {GOOGLE: ("fake-google-client", "fake-google-secret"), MICROSOFT: ("fake-ms-client", "fake-ms-secret")}
GOOGLE_SYNC_INCOMPATIBLE = frozenset(
    {"iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin"}
)


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
        return _utc(self.start), _utc(self.end)


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
class _Fault:
    status: int
    retry_after: str | None
    reason: str


@dataclass
class _Snapshot:
    """A listing computed at its first request; page tokens point into it."""

    owner: tuple[str, str, str]  # provider, account, calendar id ("" for calendar lists)
    epoch: int
    items: list[dict[str, Any]]
    final: dict[str, Any]
    fingerprint: tuple[tuple[str, str], ...] = ()


@dataclass
class _Cursor:
    owner: tuple[str, str, str]
    epoch: int
    seq: int
    window: tuple[datetime, datetime] | None


class FakeProviders:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=self._routes())
        self.reset()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeProviders:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on such sockets; without it keep-alive
        # responses stall 40 ms on delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", loop="asyncio", http="auto", ws="none", log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-providers", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake providers did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings_env(self) -> dict[str, str]:
        return {
            "SYNCHOOK_GOOGLE_API_URL": f"{self.base_url}/google",
            "SYNCHOOK_GOOGLE_TOKEN_URL": f"{self.base_url}/google/token",
            "SYNCHOOK_MICROSOFT_GRAPH_URL": f"{self.base_url}/graph/v1.0",
            "SYNCHOOK_MICROSOFT_TOKEN_URL": f"{self.base_url}/microsoft/token",
            "SYNCHOOK_GOOGLE_CLIENT_ID": CLIENTS[GOOGLE][0],
            "SYNCHOOK_GOOGLE_CLIENT_SECRET": CLIENTS[GOOGLE][1],
            "SYNCHOOK_MICROSOFT_CLIENT_ID": CLIENTS[MICROSOFT][0],
            "SYNCHOOK_MICROSOFT_CLIENT_SECRET": CLIENTS[MICROSOFT][1],
        }

    def endpoint_kwargs(self) -> dict[str, str]:
        """Keyword arguments for sync_trigger.connectors.ProviderEndpoints."""
        return {key.removeprefix("SYNCHOOK_").lower(): value for key, value in self.settings_env().items()}

    # ---- state the tests set ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget every account, token, fault and counter (the server keeps running)."""
        with self._lock:
            self._accounts: dict[tuple[str, str], FakeAccount] = {}
            self._access: dict[str, tuple[str, str, float]] = {}  # token -> provider, account, expiry
            self._refresh: dict[str, tuple[str, str]] = {}
            self._pages: dict[str, tuple[_Snapshot, int]] = {}
            self._cursors: dict[str, _Cursor] = {}
            self._faults: dict[str, deque[_Fault]] = {GOOGLE: deque(), MICROSOFT: deque()}
            self._empty_pages: Counter[str] = Counter()
            self._duplicates = 0
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
                access_token or f"{provider}-at-{secrets.token_urlsafe(12)}",
                refresh_token or f"{provider}-rt-{secrets.token_urlsafe(12)}",
            )
            self._accounts[(provider, account)] = acc
            ttl = self.access_ttl if expires_in is None else expires_in
            self._access[acc.access_token] = (provider, account, time.time() + ttl)
            self._refresh[acc.refresh_token] = (provider, account)
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
            end = end or (old.end if old else _utc(start) + timedelta(minutes=30))
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
            for token, (prov, acc, _) in list(self._access.items()):
                if (prov, acc) == (provider, account):
                    self._access[token] = (prov, acc, time.time() - 1)

    def revoke_refresh_token(self, provider: str, account: str = "alice@example.com") -> None:
        """The token endpoint answers invalid_grant for this account from now on."""
        with self._lock:
            self._accounts[(provider, account)].revoked = True

    def fail_next(self, provider: str, count: int = 1, *, status: int = 429, retry_after: float | None = None) -> None:
        """The next `count` API calls to `provider` fail: 429, 403 (Google userRateLimitExceeded), 500, 503."""
        reason = {429: "rateLimitExceeded", 403: "userRateLimitExceeded", 500: "backendError", 503: "backendError"}
        with self._lock:
            fault = _Fault(status, None if retry_after is None else f"{retry_after:g}", reason.get(status, "error"))
            self._faults[provider].extend([fault] * count)

    def inject_empty_pages(self, provider: str, count: int = 1) -> None:
        """The next `count` listing pages come back empty but still point onward (same position)."""
        with self._lock:
            self._empty_pages[provider] += count

    def duplicate_next_delta_changes(self, count: int = 1) -> None:
        """The next Graph delta round repeats its first `count` changes at its end."""
        with self._lock:
            self._duplicates = count

    # ---- counters -------------------------------------------------------------------------

    def requests(self, provider: str | None = None, path_contains: str = "") -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self._requests if (provider is None or r.provider == provider) and path_contains in r.path
            ]

    def max_in_flight(self, provider: str, account: str = "alice@example.com") -> int:
        with self._lock:
            return self._max_in_flight[(provider, account)]

    # ---- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/google/calendar/v3/users/me/calendarList", self._api(GOOGLE, self._google_calendars)),
            Route("/google/calendar/v3/calendars/{calendar_id:path}/events", self._api(GOOGLE, self._google_events)),
            Route("/google/token", self._token(GOOGLE), methods=["POST"]),
            Route("/graph/v1.0/me/calendars", self._api(MICROSOFT, self._graph_calendars)),
            Route(
                "/graph/v1.0/me/calendars/{calendar_id:path}/calendarView/delta",
                self._api(MICROSOFT, self._graph_delta),
            ),
            Route("/microsoft/token", self._token(MICROSOFT), methods=["POST"]),
        ]

    def _api(self, provider: str, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            record = self._record(provider, request, dict(request.query_params))
            with self._lock:
                owner = self._access.get(token)
                key = (provider, owner[1]) if owner and owner[0] == provider else None
                if key:
                    record.account = key[1]
                    self._in_flight[key] += 1
                    self._max_in_flight[key] = max(self._max_in_flight[key], self._in_flight[key])
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                with self._lock:
                    if key is None or owner is None or owner[2] < time.time():
                        response = _unauthorized(provider)
                    elif self._faults[provider]:
                        response = _fault(provider, self._faults[provider].popleft())
                    else:
                        response = handler(request, self._accounts[key])
            finally:
                if key:
                    with self._lock:
                        self._in_flight[key] -= 1
            record.status = response.status_code
            return response

        return endpoint

    def _record(self, provider: str, request: Request, query: dict[str, str]) -> RequestRecord:
        headers = {k: v for k, v in request.headers.items() if k in ("prefer", "content-type")}
        record = RequestRecord(provider, request.method, request.url.path, query, headers)
        with self._lock:
            self._requests.append(record)
        return record

    def _token(self, provider: str) -> Any:
        async def endpoint(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            record = self._record(provider, request, {})
            with self._lock:
                response = self._refresh_grant(provider, form)
            record.status = response.status_code
            return response

        return endpoint

    def _refresh_grant(self, provider: str, form: dict[str, str]) -> Response:
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != CLIENTS[provider]:
            return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, 401)
        owner = self._refresh.get(form.get("refresh_token", ""))
        acc = self._accounts.get(owner) if owner and owner[0] == provider else None
        if acc is None or acc.revoked:
            if provider == GOOGLE:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, 400
                )
            return JSONResponse(
                {
                    "error": "invalid_grant",
                    "error_description": "AADSTS700082: The refresh token has expired due to inactivity.",
                    "error_codes": [700082],
                },
                400,
            )
        acc.access_token = f"{provider}-at-{secrets.token_urlsafe(12)}"
        self._access[acc.access_token] = (provider, acc.account, time.time() + self.access_ttl)
        body: dict[str, Any] = {"access_token": acc.access_token, "expires_in": self.access_ttl, "token_type": "Bearer"}
        if provider == GOOGLE:
            body["scope"] = "https://www.googleapis.com/auth/calendar.readonly"
        else:
            # Rotation: the old refresh token stops working the moment a new one is issued.
            del self._refresh[acc.refresh_token]
            acc.refresh_token = f"{provider}-rt-{secrets.token_urlsafe(12)}"
            self._refresh[acc.refresh_token] = (provider, acc.account)
            body.update(refresh_token=acc.refresh_token, scope="Calendars.Read offline_access", ext_expires_in=3600)
        return JSONResponse(body)

    # -- Google

    def _google_calendars(self, request: Request, acc: FakeAccount) -> Response:
        query = dict(request.query_params)
        if "pageToken" in query:
            return self._google_page(query.pop("pageToken"), query, (GOOGLE, acc.account, ""), "calendar#calendarList")
        items = [
            {"kind": "calendar#calendarListEntry", "id": c.id, "summary": c.name, "timeZone": "UTC",
             "accessRole": "owner", "primary": c.id == acc.account}
            for c in acc.calendars.values()
        ]  # fmt: skip
        size = _int(query.get("maxResults"), 100, 250)
        snap = _Snapshot((GOOGLE, acc.account, ""), 0, items, {"nextSyncToken": _token()}, _fingerprint(query))
        return self._serve_google(snap, 0, size, "calendar#calendarList")

    def _google_events(self, request: Request, acc: FakeAccount) -> Response:
        cal = acc.calendars.get(request.path_params["calendar_id"])
        if cal is None:
            return _google_error(404, "global", "notFound", "Not Found")
        query = dict(request.query_params)
        owner = (GOOGLE, acc.account, cal.id)
        if "pageToken" in query:
            return self._google_page(query.pop("pageToken"), query, owner, "calendar#events", cal)
        sync_token = query.get("syncToken")
        if sync_token is not None:
            clash = sorted(GOOGLE_SYNC_INCOMPATIBLE & query.keys())
            if clash:
                return _google_error(
                    400, "global", "invalid", f"Sync token cannot be used with {clash[0]}.", location=clash[0]
                )
            cursor = self._cursors.get(sync_token)
            if cursor is None or cursor.owner != owner or cursor.epoch != cal.epoch:
                return _google_error(
                    410, "calendar", "fullSyncRequired", "Sync token is no longer valid, a full sync is required.",
                    location="syncToken",
                )  # fmt: skip
            events = [e for e in cal.events.values() if e.seq > cursor.seq]
        else:
            try:
                time_min = _rfc3339(query.get("timeMin"))
                time_max = _rfc3339(query.get("timeMax"))
            except ValueError as exc:
                return _google_error(400, "global", "badRequest", str(exc))
            if time_min and time_max and time_max <= time_min:
                return _google_error(400, "calendar", "timeRangeEmpty", "The specified time range is empty.")
            events = [
                e
                for e in cal.events.values()
                if (query.get("showDeleted") == "true" or not e.deleted)
                and (time_min is None or e.bounds()[1] > time_min)
                and (time_max is None or e.bounds()[0] < time_max)
            ]
        events.sort(key=lambda e: e.seq)
        next_sync = self._new_cursor(owner, cal, None)
        items = [_google_event(e) for e in events]
        size = _int(query.get("maxResults"), self.page_size[GOOGLE], 2500)
        snap = _Snapshot(owner, cal.epoch, items, {"nextSyncToken": next_sync}, _fingerprint(query))
        return self._serve_google(snap, 0, size, "calendar#events")

    def _google_page(
        self, token: str, query: dict[str, str], owner: tuple[str, str, str], kind: str, cal: FakeCalendar | None = None
    ) -> Response:
        found = self._pages.get(token)
        if found is None or found[0].owner != owner or (cal is not None and found[0].epoch != cal.epoch):
            if cal is not None and found is not None:
                return _google_error(410, "calendar", "fullSyncRequired", "Sync token is no longer valid.")
            return _google_error(400, "global", "invalid", "Invalid page token value.", location="pageToken")
        snap, offset = found
        if snap.fingerprint != _fingerprint(query):
            return _google_error(400, "global", "invalid", "pageToken used with a different query.")
        default = self.page_size[GOOGLE] if kind == "calendar#events" else 100
        return self._serve_google(snap, offset, _int(query.get("maxResults"), default, 2500), kind)

    def _serve_google(self, snap: _Snapshot, offset: int, size: int, kind: str) -> Response:
        body: dict[str, Any] = {"kind": kind, "etag": f'"{secrets.token_hex(4)}"'}
        if kind == "calendar#events":
            body.update(summary=snap.owner[2], updated=_google_time(datetime.now(UTC)), timeZone="UTC")
        if self._empty_pages[GOOGLE] > 0:
            self._empty_pages[GOOGLE] -= 1
            return JSONResponse(body | {"items": [], "nextPageToken": self._page_token(snap, offset)})
        end = offset + size
        body["items"] = snap.items[offset:end]
        if end < len(snap.items):
            body["nextPageToken"] = self._page_token(snap, end)
        else:
            body.update(snap.final)
        return JSONResponse(body)

    # -- Microsoft Graph

    def _graph_calendars(self, request: Request, acc: FakeAccount) -> Response:
        base = f"{str(request.base_url).rstrip('/')}/graph/v1.0/me/calendars"
        skip = request.query_params.get("$skiptoken")
        if skip is not None:
            found = self._pages.get(skip)
            if found is None or found[0].owner != (MICROSOFT, acc.account, ""):
                return _graph_error(400, "ErrorInvalidParameter", "Invalid skip token.")
            snap, offset = found
        else:
            items = [
                {"id": c.id, "name": c.name, "canEdit": True, "owner": {"name": acc.account, "address": acc.account}}
                for c in acc.calendars.values()
            ]
            snap, offset = _Snapshot((MICROSOFT, acc.account, ""), 0, items, {}), 0
        return self._serve_graph(snap, offset, _maxpagesize(request, self.page_size[MICROSOFT]), base, "calendar")

    def _graph_delta(self, request: Request, acc: FakeAccount) -> Response:
        cal = acc.calendars.get(request.path_params["calendar_id"])
        if cal is None:
            return _graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        owner = (MICROSOFT, acc.account, cal.id)
        base = (
            f"{str(request.base_url).rstrip('/')}/graph/v1.0/me/calendars/{quote(cal.id, safe='')}/calendarView/delta"
        )
        size = _maxpagesize(request, self.page_size[MICROSOFT])
        query = request.query_params
        gone = _graph_error(410, cal.gone_code, "The sync state generation is not found or has expired.")
        if "$skiptoken" in query:
            found = self._pages.get(query["$skiptoken"])
            if found is None or found[0].owner != owner or found[0].epoch != cal.epoch:
                return gone
            return self._serve_graph(found[0], found[1], size, base, "event")
        if "$deltatoken" in query:
            cursor = self._cursors.get(query["$deltatoken"])
            if cursor is None or cursor.owner != owner or cursor.epoch != cal.epoch or cursor.window is None:
                return gone
            window = cursor.window
            changed = sorted((e for e in cal.events.values() if e.seq > cursor.seq), key=lambda e: e.seq)
            items = [_graph_event(e) if _overlaps(e, window) and not e.deleted else _graph_removed(e) for e in changed]
        else:
            try:
                window = (_graph_time(query.get("startDateTime")), _graph_time(query.get("endDateTime")))
            except ValueError:
                return _graph_error(
                    400, "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters "
                    "StartDateTime and EndDateTime.",
                )  # fmt: skip
            live = sorted(
                (e for e in cal.events.values() if not e.deleted and _overlaps(e, window)), key=lambda e: e.seq
            )
            items = [_graph_event(e) for e in live]
        if self._duplicates and items:
            items += items[: self._duplicates]
            self._duplicates = 0
        delta = self._new_cursor(owner, cal, window)
        snap = _Snapshot(owner, cal.epoch, items, {"@odata.deltaLink": f"{base}?$deltatoken={delta}"})
        return self._serve_graph(snap, 0, size, base, "event")

    def _serve_graph(self, snap: _Snapshot, offset: int, size: int, base: str, entity: str) -> Response:
        body: dict[str, Any] = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#Collection({entity})"}
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"}
        if self._empty_pages[MICROSOFT] > 0:
            self._empty_pages[MICROSOFT] -= 1
            body.update({"@odata.nextLink": f"{base}?$skiptoken={self._page_token(snap, offset)}", "value": []})
            return JSONResponse(body, headers=headers)
        end = offset + size
        if end < len(snap.items):
            body["@odata.nextLink"] = f"{base}?$skiptoken={self._page_token(snap, end)}"
        else:
            body.update(snap.final)
        body["value"] = snap.items[offset:end]
        return JSONResponse(body, headers=headers)

    # -- tokens

    def _page_token(self, snap: _Snapshot, offset: int) -> str:
        token = _token()
        self._pages[token] = (snap, offset)
        return token

    def _new_cursor(self, owner: tuple[str, str, str], cal: FakeCalendar, window: Any) -> str:
        token = _token()
        self._cursors[token] = _Cursor(owner, cal.epoch, cal.seq, window)
        return token


# ---- wire formats ------------------------------------------------------------------------------


def _google_error(status: int, domain: str, reason: str, message: str, *, location: str | None = None) -> Response:
    item: dict[str, str] = {"domain": domain, "reason": reason, "message": message}
    if location:
        item.update(locationType="parameter", location=location)
    return JSONResponse({"error": {"errors": [item], "code": status, "message": message}}, status)


def _graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    inner = {"request-id": secrets.token_hex(8), "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    return JSONResponse({"error": {"code": code, "message": message, "innerError": inner}}, status, headers=headers)


def _unauthorized(provider: str) -> Response:
    if provider == GOOGLE:
        item = {"domain": "global", "reason": "authError", "message": "Invalid Credentials",
                "locationType": "header", "location": "Authorization"}  # fmt: skip
        return JSONResponse({"error": {"errors": [item], "code": 401, "message": "Invalid Credentials"}}, 401)
    return _graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")


def _fault(provider: str, fault: _Fault) -> Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    if provider == GOOGLE:
        domain = "usageLimits" if fault.status in (403, 429) else "global"
        response = _google_error(fault.status, domain, fault.reason, "Rate Limit Exceeded")
        response.headers.update(headers or {})
        return response
    code = {429: "TooManyRequests", 503: "ServiceNotAvailable"}.get(fault.status, "generalException")
    return _graph_error(fault.status, code, "Too many requests or service unavailable.", headers)


def _google_event(e: FakeEvent) -> dict[str, Any]:
    if e.deleted:
        return {"kind": "calendar#event", "etag": f'"{e.seq}"', "id": e.id, "status": "cancelled"}

    def when(v: datetime | date) -> dict[str, str]:
        if isinstance(v, datetime):
            return {"dateTime": _utc(v).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return {"date": v.isoformat()}

    return {"kind": "calendar#event", "etag": f'"{e.seq}"', "id": e.id, "status": "confirmed",
            "summary": e.summary, "updated": _google_time(e.updated), "start": when(e.start), "end": when(e.end),
            "iCalUID": f"{e.id}@google.com", "sequence": 0}  # fmt: skip


def _graph_event(e: FakeEvent) -> dict[str, Any]:
    def when(v: datetime | date) -> dict[str, str]:
        # Graph writes seven fractional digits and names the zone separately.
        return {"dateTime": _utc(v).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0", "timeZone": "UTC"}

    return {"@odata.type": "#microsoft.graph.event", "@odata.etag": f'W/"{e.seq}"', "id": e.id,
            "subject": e.summary, "isAllDay": e.all_day, "isCancelled": False, "type": "singleInstance",
            "lastModifiedDateTime": _google_time(e.updated), "start": when(e.start), "end": when(e.end)}  # fmt: skip


def _graph_removed(e: FakeEvent) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.event", "id": e.id, "@removed": {"reason": "deleted"}}


def _utc(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _google_time(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.") + f"{_utc(value).microsecond // 1000:03d}Z"


def _rfc3339(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"Bad Request: {value!r} has no time zone offset")
    return parsed.astimezone(UTC)


def _graph_time(value: str | None) -> datetime:
    if not value:
        raise ValueError("missing")
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _overlaps(e: FakeEvent, window: tuple[datetime, datetime]) -> bool:
    start, end = e.bounds()
    return start < window[1] and end > window[0]


def _maxpagesize(request: Request, default: int) -> int:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "odata.maxpagesize":
            return _int(value, default, 1000)
    return default


def _int(value: str | None, default: int, cap: int) -> int:
    try:
        return max(1, min(cap, int(value))) if value else default
    except ValueError:
        return default


def _fingerprint(query: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in query.items() if k != "pageToken"))


def _token() -> str:
    return secrets.token_urlsafe(18)


def _new_id(provider: str) -> str:
    return secrets.token_hex(13) if provider == GOOGLE else "AAMk" + secrets.token_urlsafe(24)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Google Calendar + Microsoft Graph for manual runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="store_true", help="add alice@example.com on both with 20 events each")
    args = parser.parse_args()
    fakes = FakeProviders(args.host, args.port).start()
    print(fakes.base_url, flush=True)
    for key, value in fakes.settings_env().items():
        print(f"{key}={value}", flush=True)
    if args.seed:
        for provider in (GOOGLE, MICROSOFT):
            acc = fakes.add_account(provider, access_token=f"{provider}-access", refresh_token=f"{provider}-refresh")
            # Inside the default sync window (now-90 d .. now+180 d), so a first sync finds them.
            tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
            fakes.add_events(provider, acc.account, acc.account, 20, first=tomorrow)
            print(
                f"{provider}: account={acc.account} access_token={acc.access_token} refresh_token={acc.refresh_token}"
            )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fakes.stop()


if __name__ == "__main__":
    main()
