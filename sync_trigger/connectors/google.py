"""Google Calendar API v3 connector (PROVIDERS.md §1).

Full sync: `timeMin`/`timeMax` + `singleEvents=true` + `showDeleted=true`. Incremental:
`syncToken` alone (plus `maxResults`, which Google allows with it). Pages repeat the same
query plus `pageToken` until a page carries `nextSyncToken`; empty pages may still carry
`nextPageToken`. 410 → CursorExpired.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sync_trigger.connectors._http import error_message
from sync_trigger.connectors._time import date_midnight_utc, parse_timestamp, rfc3339
from sync_trigger.connectors.base import (
    CalendarInfo,
    ChangeChannel,
    ChangePage,
    ConnectorError,
    CursorExpired,
    EventChange,
    ProviderEndpoints,
    ProviderError,
)
from sync_trigger.connectors.mapping import from_google
from sync_trigger.connectors.oauth import OAuthConnector

logger = logging.getLogger(__name__)

MAX_EVENTS_PAGE = 2500
MAX_CALENDARS_PAGE = 250
THROTTLE_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
# events.watch: the lifetime we ask for (7 days, Google's maximum for calendar channels, CONTRACT §7).
WATCH_TTL_SECONDS = 604_800


def _reasons(payload: Any) -> set[str]:
    error = payload.get("error") if isinstance(payload, dict) else None
    errors = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(errors, list):
        return set()
    return {item["reason"] for item in errors if isinstance(item, dict) and isinstance(item.get("reason"), str)}


class GooglePolicy:
    provider = "google"

    def is_throttle(self, status: int, payload: Any) -> bool:
        return status == 429 or (status == 403 and bool(_reasons(payload) & THROTTLE_REASONS))

    def error_for(self, status: int, payload: Any) -> ConnectorError:
        detail = error_message(payload)
        if status == 410:
            return CursorExpired(detail or "Google sync token is no longer valid", status=status)
        reasons = ",".join(sorted(_reasons(payload))) or "error"
        return ProviderError(f"Google answered {status} {reasons}: {detail}".rstrip(": "), status=status)


class GoogleConnector(OAuthConnector):
    provider = "google"

    def _configure(self, endpoints: ProviderEndpoints) -> None:
        self._base = endpoints.google_api_url.rstrip("/") + "/calendar/v3"

    def _policy(self) -> GooglePolicy:
        return GooglePolicy()

    def _token_endpoint(self, endpoints: ProviderEndpoints) -> tuple[str, str | None, str | None]:
        return endpoints.google_token_url, endpoints.google_client_id, endpoints.google_client_secret

    async def list_calendars(self) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        params = {"maxResults": str(min(self._page_size or MAX_CALENDARS_PAGE, MAX_CALENDARS_PAGE))}
        page_token: str | None = None
        while True:
            query = dict(params, pageToken=page_token) if page_token else params
            payload = await self._requester.request("GET", f"{self._base}/users/me/calendarList", params=query)
            for item in payload.get("items") or []:
                if not isinstance(item, dict) or item.get("deleted") or not isinstance(item.get("id"), str):
                    continue
                name = item.get("summaryOverride") or item.get("summary") or item["id"]
                calendars.append(CalendarInfo(id=item["id"], name=str(name)))
            page_token = payload.get("nextPageToken")
            if not page_token:
                return calendars

    async def changes(
        self,
        calendar_id: str,
        *,
        cursor: str | None,
        window: tuple[datetime, datetime] | None = None,
    ) -> AsyncIterator[ChangePage]:
        params: dict[str, str] = {}
        if cursor is None:
            if window is None:
                raise ValueError("a full sync (cursor=None) needs a window")
            params.update(
                timeMin=rfc3339(window[0]), timeMax=rfc3339(window[1]), singleEvents="true", showDeleted="true"
            )
        else:
            # Google rejects syncToken next to timeMin/timeMax/q/…; the token remembers the original query.
            params["syncToken"] = cursor
        if self._page_size:
            params["maxResults"] = str(min(self._page_size, MAX_EVENTS_PAGE))
        url = f"{self._base}/calendars/{quote(calendar_id, safe='')}/events"

        page_token: str | None = None
        pages = 0
        while True:
            query = dict(params, pageToken=page_token) if page_token else params
            payload = await self._requester.request("GET", url, params=query)
            pages += 1
            changes = [c for c in (_change(calendar_id, item) for item in payload.get("items") or []) if c]
            page_token = payload.get("nextPageToken") or None
            sync_token = payload.get("nextSyncToken") or None
            if page_token:
                yield ChangePage(changes)
                continue
            if not sync_token:
                raise ProviderError("Google ended an events listing without nextSyncToken")
            logger.debug("google calendar round done after %d pages", pages)
            yield ChangePage(changes, next_cursor=sync_token)
            return

    # --- Push (PROVIDERS.md §1.5) ----------------------------------------------------------------

    async def watch(
        self, calendar_id: str, *, channel_id: str, address: str, token: str, ttl: int = WATCH_TTL_SECONDS
    ) -> ChangeChannel:
        """`events.watch`: a new channel `channel_id` (ours) delivering to `address` with `token`."""
        url = f"{self._base}/calendars/{quote(calendar_id, safe='')}/events/watch"
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": token, "params": {"ttl": str(ttl)}}
        started = datetime.now(UTC)
        payload = await self._requester.request("POST", url, json_body=body)
        resource_id = payload.get("resourceId") if isinstance(payload, dict) else None
        if not isinstance(resource_id, str) or not resource_id:
            raise ProviderError("Google created a channel without a resourceId")
        expires_at = _millis(payload.get("expiration")) or started + timedelta(seconds=ttl)
        return ChangeChannel(channel_id=channel_id, resource_id=resource_id, expires_at=expires_at)

    async def stop_channel(self, channel_id: str, resource_id: str) -> bool:
        """`channels.stop`; False when Google no longer knows the channel (stopped or expired: nothing to do)."""
        try:
            body = {"id": channel_id, "resourceId": resource_id}
            await self._requester.request("POST", f"{self._base}/channels/stop", json_body=body, empty_ok=True)
        except ProviderError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _millis(value: Any) -> datetime | None:
    # `expiration` is Unix milliseconds as a string.
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _change(calendar_id: str, item: Any) -> EventChange | None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if item.get("status") == "cancelled":
        return EventChange(
            calendar_id, item["id"], deleted=True, updated=parse_timestamp(item.get("updated")), raw=item
        )
    start, all_day = _when(item.get("start"))
    end, _ = _when(item.get("end"))
    return EventChange(
        calendar_id,
        item["id"],
        deleted=False,
        summary=item.get("summary"),
        start=start,
        end=end,
        updated=parse_timestamp(item.get("updated")),
        all_day=all_day,
        raw=item,
        event=from_google(item),
    )


def _when(value: Any) -> tuple[datetime | None, bool]:
    if not isinstance(value, dict):
        return None, False
    if "dateTime" in value:
        return parse_timestamp(value["dateTime"]), False
    return date_midnight_utc(value.get("date")), "date" in value
