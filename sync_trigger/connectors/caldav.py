"""CalDAV connector (CONTRACT §8, PROVIDERS.md §6): Apple iCloud, Fastmail, Nextcloud, any RFC 4791 server.

- Discovery: `/.well-known/caldav` (else the URL itself) → current-user-principal → calendar-home-set →
  the collections whose supported components include VEVENT. A calendar's id is its absolute URL.
- Full round (cursor None): the collection's sync-token and ctag first (so a change made during the
  round is seen again next time), then `calendar-query` over the window; every member is expanded to
  its occurrences in the window (caldav_ical).
- Incremental: RFC 6578 `sync-collection` from the stored token (a 507 for the collection: truncated,
  ask again with the new token), changed members fetched by `calendar-multiget` in pages, 404 members
  deleted; `valid-sync-token` refused → CursorExpired (the caller runs a full round). A server without
  sync-collection: compare `getctag`, then each member's `getetag`.

The cursor is JSON: the token or ctag, the window the index holds, and per member href its etag and the
event ids it produced, so a removed member (or a removed occurrence) becomes deletions of exactly those ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp

from sync_trigger.connectors import caldav_xml as dav
from sync_trigger.connectors.base import (
    CalendarInfo,
    ChangePage,
    CursorExpired,
    EventChange,
    ProviderError,
    Tokens,
)
from sync_trigger.connectors.caldav_http import DavReply, DavTransport, UrlCheck
from sync_trigger.connectors.caldav_ical import Instance, instances
from sync_trigger.connectors.normalized import NOT_CONTENT, EventStatus
from sync_trigger.connectors.throttle import RetryHook, Sleep
from synchook.timeutil import isoformat, parse_datetime

__all__ = ["CalDAVConnector", "CalDAVCredentials"]

DEFAULT_PAGE_SIZE = 100  # members per calendar-multiget, and per page handed to the caller
_CURSOR_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True)
class CalDAVCredentials:
    server_url: str
    username: str
    password: str = field(repr=False)


@dataclass
class _State:
    """What the cursor carries between rounds."""

    token: str | None
    ctag: str | None
    window: tuple[datetime, datetime]
    members: dict[str, tuple[str | None, list[str]]]  # href path → (etag, event ids)

    def dump(self) -> str:
        return json.dumps(
            {
                "v": _CURSOR_VERSION,
                "token": self.token,
                "ctag": self.ctag,
                "window": [isoformat(self.window[0]), isoformat(self.window[1])],
                "members": {href: [etag, ids] for href, (etag, ids) in self.members.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def load(cls, cursor: str) -> _State:
        try:
            raw = json.loads(cursor)
            if raw.get("v") != _CURSOR_VERSION:
                raise ValueError("cursor version")
            window = (parse_datetime(raw["window"][0]), parse_datetime(raw["window"][1]))
            members = {str(h): (v[0], [str(i) for i in v[1]]) for h, v in raw["members"].items()}
            return cls(raw.get("token"), raw.get("ctag"), window, members)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            # Not ours (or an older shape): start over, as for an expired token.
            raise CursorExpired("stored CalDAV cursor is unreadable; a full sync is needed") from None


class CalDAVConnector:
    provider = "caldav"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: CalDAVCredentials,
        check_url: UrlCheck,
        *,
        max_throttle_wait: float = 60.0,
        page_size: int | None = None,
        sleep: Sleep = asyncio.sleep,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._credentials = credentials
        self._http = DavTransport(
            session,
            credentials.username,
            credentials.password,
            check_url,
            max_throttle_wait=max_throttle_wait,
            sleep=sleep,
            on_retry=on_retry,
        )
        self._page_size = page_size or DEFAULT_PAGE_SIZE
        self.requests = 0  # requests made, for the benchmark

    def __repr__(self) -> str:
        return f"CalDAVConnector(server_url={self._credentials.server_url!r}, username=***)"

    @property
    def tokens(self) -> Tokens:
        # A Basic password never changes under us: nothing to save back.
        return Tokens(access_token=self._credentials.password, refresh_token=None)

    # --- discovery -------------------------------------------------------------------------------------

    async def list_calendars(self) -> list[CalendarInfo]:
        home = await self._calendar_home()
        reply = await self._report_or_propfind(
            "PROPFIND",
            home,
            dav.propfind("d:resourcetype", "d:displayname", "c:supported-calendar-component-set"),
            depth="1",
        )
        calendars = []
        for member in _parse(reply).members:
            # No component set means "any component" (RFC 4791 §5.2.3).
            if member.is_calendar and (not member.components or "VEVENT" in member.components):
                url = urljoin(reply.url, member.href)
                calendars.append(CalendarInfo(id=url, name=member.displayname or urlsplit(url).path))
        return calendars

    async def _calendar_home(self) -> str:
        base = self._credentials.server_url
        principal: str | None = None
        failure: ProviderError | None = None
        for start in (urljoin(base, "/.well-known/caldav"), base):
            try:
                reply = await self._report_or_propfind("PROPFIND", start, dav.propfind("d:current-user-principal"))
            except ProviderError as exc:
                failure = failure or exc  # the well-known URL is optional; a refused URL must still show
                continue
            principal = _first_href(reply, "current-user-principal")
            if principal:
                break
        if principal is None:
            raise failure or ProviderError("CalDAV server did not name the current user's principal")
        reply = await self._report_or_propfind("PROPFIND", principal, dav.propfind("c:calendar-home-set"))
        home = _first_href(reply, "calendar-home-set")
        if home is None:
            raise ProviderError("CalDAV server did not name a calendar home")
        return home

    # --- a sync round ----------------------------------------------------------------------------------

    async def changes(
        self, calendar_id: str, *, cursor: str | None, window: tuple[datetime, datetime] | None = None
    ) -> AsyncIterator[ChangePage]:
        if cursor is None:
            if window is None:
                raise ValueError("a full CalDAV round needs a window")
            async for page in self._full(calendar_id, window):
                yield page
            return
        state = _State.load(cursor)
        if state.token is not None:
            async for page in self._incremental(calendar_id, state):
                yield page
        else:
            async for page in self._by_etags(calendar_id, state):
                yield page

    async def _full(self, calendar: str, window: tuple[datetime, datetime]) -> AsyncIterator[ChangePage]:
        token, ctag = await self._collection_state(calendar)
        state = _State(token, ctag, window, {})
        if token is None:
            # ctag/etag fallback: every member's etag, also of those outside the window, for the next compare;
            # read before the query, so a member changed in between differs next time rather than being missed.
            for href, etag in (await self._etags(calendar)).items():
                state.members[href] = (etag, [])
        reply = await self._report(calendar, dav.calendar_query(window), depth="1")
        found = [m for m in _parse(reply).members if m.status == 200 and m.calendar_data]
        chunks = list(_chunks(found, self._page_size)) or [[]]
        for number, chunk in enumerate(chunks, start=1):
            changes: list[EventChange] = []
            for member in chunk:
                changes.extend(self._member_changes(calendar, state, member.href, member.etag, member.calendar_data))
            yield ChangePage(changes, next_cursor=state.dump() if number == len(chunks) else None)

    async def _incremental(self, calendar: str, state: _State) -> AsyncIterator[ChangePage]:
        changed: dict[str, str | None] = {}
        removed: set[str] = set()
        token = state.token
        collection = urlsplit(calendar).path
        while True:
            reply = await self._http.request("REPORT", calendar, dav.sync_collection(token))
            self.requests += 1
            if reply.status in (403, 409) and "valid-sync-token" in dav.parse_error_conditions(reply.body):
                raise CursorExpired("CalDAV server no longer knows the sync token")
            if reply.status in (403, 405, 501) and token == state.token:
                # It shows a sync-token but refuses the report (supported-report, or not implemented at all):
                # follow the calendar by ctag/etag from now on.
                state.token = None
                async for page in self._by_etags(calendar, state):
                    yield page
                return
            if reply.status != 207:
                raise ProviderError(f"CalDAV sync-collection answered HTTP {reply.status}", status=reply.status)
            result = _parse(reply)
            truncated = False
            for member in result.members:
                path = urlsplit(urljoin(reply.url, member.href)).path
                if path.rstrip("/") == collection.rstrip("/"):
                    truncated = truncated or member.status == 507
                elif member.status == 404:
                    removed.add(path)
                    changed.pop(path, None)
                elif member.status == 200:
                    changed[path] = member.etag
                    removed.discard(path)
            token = result.sync_token or token
            if not truncated:
                break
        state.token = token
        async for page in self._apply(calendar, state, changed, removed):
            yield page

    async def _by_etags(self, calendar: str, state: _State) -> AsyncIterator[ChangePage]:
        _token, ctag = await self._collection_state(calendar)
        if ctag is not None and ctag == state.ctag:
            yield ChangePage([], next_cursor=state.dump())
            return
        etags = await self._etags(calendar)
        changed = {href: etag for href, etag in etags.items() if state.members.get(href, (None, []))[0] != etag}
        removed = set(state.members) - set(etags)
        state.ctag = ctag
        async for page in self._apply(calendar, state, changed, removed):
            yield page

    async def _apply(
        self, calendar: str, state: _State, changed: dict[str, str | None], removed: set[str]
    ) -> AsyncIterator[ChangePage]:
        deletions: list[EventChange] = []
        for href in sorted(removed):
            _etag, ids = state.members.pop(href, (None, []))
            deletions.extend(EventChange(calendar_id=calendar, event_id=i, deleted=True) for i in ids)
        chunks = list(_chunks(sorted(changed), self._page_size))
        if not chunks:
            yield ChangePage(deletions, next_cursor=state.dump())
            return
        for number, hrefs in enumerate(chunks, start=1):
            changes = deletions if number == 1 else []
            reply = await self._report(calendar, dav.calendar_multiget(hrefs), depth="1")
            answered: set[str] = set()
            for member in _parse(reply).members:
                path = urlsplit(urljoin(reply.url, member.href)).path
                answered.add(path)
                if member.status == 200 and member.calendar_data is not None:
                    changes.extend(self._member_changes(calendar, state, path, member.etag, member.calendar_data))
                else:  # gone between the two requests
                    _etag, ids = state.members.pop(path, (None, []))
                    changes.extend(EventChange(calendar_id=calendar, event_id=i, deleted=True) for i in ids)
            yield ChangePage(changes, next_cursor=state.dump() if number == len(chunks) else None)

    def _member_changes(
        self, calendar: str, state: _State, href: str, etag: str | None, ics: str | None
    ) -> list[EventChange]:
        """The member's occurrences in the window as upserts, and deletions for the ids it no longer yields."""
        path = urlsplit(href).path
        found = instances(ics or "", state.window)
        live = [i for i in found if i.event.status is not EventStatus.CANCELLED or i.event.original_start is None]
        ids = [i.event_id for i in live]
        _etag, previous = state.members.get(path, (None, []))
        state.members[path] = (etag, ids)
        changes = [_upsert(calendar, i) for i in live]
        # An occurrence cancelled (or dropped by an EXDATE, or moved out of the window) is deleted.
        changes.extend(EventChange(calendar_id=calendar, event_id=i, deleted=True) for i in previous if i not in ids)
        return changes

    # --- requests --------------------------------------------------------------------------------------

    async def _collection_state(self, calendar: str) -> tuple[str | None, str | None]:
        reply = await self._report_or_propfind("PROPFIND", calendar, dav.propfind("d:sync-token", "cs:getctag"))
        members = _parse(reply).members
        if not members:
            return None, None
        return members[0].sync_token, members[0].ctag

    async def _etags(self, calendar: str) -> dict[str, str | None]:
        reply = await self._report_or_propfind("PROPFIND", calendar, dav.propfind("d:getetag"), depth="1")
        collection = urlsplit(calendar).path.rstrip("/")
        etags = {}
        for member in _parse(reply).members:
            path = urlsplit(urljoin(reply.url, member.href)).path
            if path.rstrip("/") != collection and member.status == 200:
                etags[path] = member.etag
        return etags

    async def _report(self, calendar: str, body: bytes, *, depth: str = "1") -> DavReply:
        return await self._report_or_propfind("REPORT", calendar, body, depth=depth)

    async def _report_or_propfind(self, method: str, url: str, body: bytes, *, depth: str = "0") -> DavReply:
        reply = await self._http.request(method, url, body, depth=depth)
        self.requests += 1
        if reply.status != 207:
            raise ProviderError(f"CalDAV {method} answered HTTP {reply.status}", status=reply.status)
        return reply


def _parse(reply: DavReply) -> dav.Multistatus:
    try:
        return dav.parse_multistatus(reply.body)
    except dav.XMLError as exc:
        raise ProviderError(f"CalDAV server sent {exc}", status=reply.status) from None


def _first_href(reply: DavReply, prop: str) -> str | None:
    try:
        members = dav.parse_multistatus(reply.body).members
    except dav.XMLError:
        return None
    for member in members:
        hrefs = member.hrefs.get(prop)
        if hrefs:
            return urljoin(reply.url, hrefs[0])
    return None


def _upsert(calendar: str, instance: Instance) -> EventChange:
    event = instance.event
    content = {k: v for k, v in event.as_json().items() if k not in NOT_CONTENT}
    # A per-occurrence content tag: the member's own etag changes for every occurrence of a series when one
    # of them is edited, this one only when this occurrence's normalised content does.
    tag = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]
    raw = {"id": instance.event_id, "iCalUID": event.ical_uid, "status": event.status.value, "etag": tag}
    return EventChange(
        calendar_id=calendar,
        event_id=instance.event_id,
        deleted=False,
        summary=event.title,
        start=instance.start,
        end=instance.end,
        updated=event.updated_at,
        all_day=event.all_day,
        raw=raw,
        event=event,
    )


def _chunks(items: Iterable[T], size: int) -> Iterable[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
