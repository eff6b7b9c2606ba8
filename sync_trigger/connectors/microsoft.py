"""Microsoft Graph v1.0 connector (PROVIDERS.md §2).

First request of a full round: `/me/calendars/{id}/calendarView/delta?startDateTime&endDateTime`;
afterwards the returned `@odata.nextLink` / `@odata.deltaLink` URLs are followed unchanged and
the whole deltaLink is the cursor. `@removed` items become deleted changes. Graph may report
the same change twice in a round; we pass repeats on and the caller upserts by event id.
At most 4 requests of one connector are in flight (Outlook's per-mailbox limit).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from sync_trigger.connectors._http import error_message
from sync_trigger.connectors._time import date_midnight_utc, parse_timestamp, parse_zoned, rfc3339
from sync_trigger.connectors.base import (
    CalendarInfo,
    ChangeChannel,
    ChangePage,
    ChannelGone,
    ConnectorError,
    CursorExpired,
    EventChange,
    ProviderEndpoints,
    ProviderError,
)
from sync_trigger.connectors.mapping import from_graph
from sync_trigger.connectors.oauth import OAuthConnector
from synchook.timeutil import isoformat

logger = logging.getLogger(__name__)

MAILBOX_CONCURRENCY = 4
CURSOR_GONE_CODES = frozenset({"syncstatenotfound", "resyncrequired", "invaliddeltatoken"})
# Subscriptions on Outlook events: at most 4,230 minutes ahead (CONTRACT §7, PROVIDERS.md §2.5).
SUBSCRIPTION_MINUTES = 4230


def _error_code(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


class GraphPolicy:
    provider = "microsoft"

    def is_throttle(self, status: int, payload: Any) -> bool:
        return status == 429

    def error_for(self, status: int, payload: Any) -> ConnectorError:
        code = _error_code(payload)
        detail = error_message(payload)
        if status == 410 and code.lower() in CURSOR_GONE_CODES:
            return CursorExpired(detail or "Graph delta state is gone", status=status)
        return ProviderError(f"Graph answered {status} {code or 'error'}: {detail}".rstrip(": "), status=status)


class MicrosoftConnector(OAuthConnector):
    provider = "microsoft"
    concurrency = MAILBOX_CONCURRENCY

    def _configure(self, endpoints: ProviderEndpoints) -> None:
        self._base = endpoints.microsoft_graph_url.rstrip("/")
        origin = urlsplit(self._base)
        self._origin = (origin.scheme, origin.netloc)

    def _policy(self) -> GraphPolicy:
        return GraphPolicy()

    def _token_endpoint(self, endpoints: ProviderEndpoints) -> tuple[str, str | None, str | None]:
        return endpoints.microsoft_token_url, endpoints.microsoft_client_id, endpoints.microsoft_client_secret

    def _headers(self) -> dict[str, str]:
        # Ask for UTC so event times never carry Windows zone names we cannot map.
        prefer = ['outlook.timezone="UTC"']
        if self._page_size:
            prefer.append(f"odata.maxpagesize={self._page_size}")
        return {"Prefer": ", ".join(prefer)}

    def _checked_link(self, link: str) -> str:
        # Links come from responses or storage and carry our bearer token when followed:
        # never send it anywhere but the configured Graph host.
        parts = urlsplit(link)
        if (parts.scheme, parts.netloc) != self._origin:
            raise ProviderError("Graph link points outside the configured Graph URL")
        return link

    async def list_calendars(self) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        url: str | None = f"{self._base}/me/calendars"
        while url:
            payload = await self._requester.request("GET", url, headers=self._headers())
            for item in payload.get("value") or []:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and "@removed" not in item:
                    calendars.append(CalendarInfo(id=item["id"], name=str(item.get("name") or item["id"])))
            next_link = payload.get("@odata.nextLink")
            url = self._checked_link(next_link) if next_link else None
        return calendars

    async def changes(
        self,
        calendar_id: str,
        *,
        cursor: str | None,
        window: tuple[datetime, datetime] | None = None,
    ) -> AsyncIterator[ChangePage]:
        params: dict[str, str] | None = None
        if cursor is None:
            if window is None:
                raise ValueError("a full sync (cursor=None) needs a window")
            url = f"{self._base}/me/calendars/{quote(calendar_id, safe='')}/calendarView/delta"
            params = {"startDateTime": rfc3339(window[0]), "endDateTime": rfc3339(window[1])}
        else:
            url = self._checked_link(cursor)

        pages = 0
        while True:
            payload = await self._requester.request("GET", url, params=params, headers=self._headers())
            params = None  # only the first request carries the window; links are used unchanged
            pages += 1
            changes = [c for c in (_change(calendar_id, item) for item in payload.get("value") or []) if c]
            next_link = payload.get("@odata.nextLink")
            delta_link = payload.get("@odata.deltaLink")
            if next_link:
                url = self._checked_link(next_link)
                yield ChangePage(changes)
                continue
            if not delta_link:
                raise ProviderError("Graph ended a delta round without @odata.deltaLink")
            logger.debug("graph calendar round done after %d pages", pages)
            yield ChangePage(changes, next_cursor=self._checked_link(delta_link))
            return

    # --- Change notifications (PROVIDERS.md §2.5) -----------------------------------------------

    async def subscribe(
        self,
        calendar_id: str,
        *,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        minutes: int = SUBSCRIPTION_MINUTES,
    ) -> ChangeChannel:
        """`POST /subscriptions` on the calendar's events; Graph validates both URLs before it answers."""
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": f"me/calendars/{calendar_id}/events",
            "expirationDateTime": _expiry(minutes),
            "clientState": client_state,
        }
        payload = await self._requester.request("POST", f"{self._base}/subscriptions", json_body=body)
        subscription_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(subscription_id, str) or not subscription_id:
            raise ProviderError("Graph created a subscription without an id")
        return ChangeChannel(channel_id=subscription_id, expires_at=_expires_at(payload, minutes))

    async def renew_subscription(self, subscription_id: str, *, minutes: int = SUBSCRIPTION_MINUTES) -> ChangeChannel:
        """`PATCH /subscriptions/{id}` with a new expiry; ChannelGone when Graph no longer has it (404)."""
        try:
            payload = await self._requester.request(
                "PATCH", self._subscription_url(subscription_id), json_body={"expirationDateTime": _expiry(minutes)}
            )
        except ProviderError as exc:
            if exc.status == 404:
                raise ChannelGone("Graph no longer has this subscription", status=404) from None
            raise
        return ChangeChannel(channel_id=subscription_id, expires_at=_expires_at(payload, minutes))

    async def delete_subscription(self, subscription_id: str) -> bool:
        """`DELETE /subscriptions/{id}`; False when it was already gone (expired or removed: nothing to do)."""
        try:
            await self._requester.request("DELETE", self._subscription_url(subscription_id), empty_ok=True)
        except ProviderError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _subscription_url(self, subscription_id: str) -> str:
        return f"{self._base}/subscriptions/{quote(subscription_id, safe='')}"


def _expiry(minutes: int) -> str:
    return isoformat(datetime.now(UTC) + timedelta(minutes=minutes)) or ""


def _expires_at(payload: Any, minutes: int) -> datetime:
    # Graph may grant less than asked: its answer wins; without one, what we asked for.
    granted = parse_timestamp(payload.get("expirationDateTime")) if isinstance(payload, dict) else None
    return granted or datetime.now(UTC) + timedelta(minutes=minutes)


def _change(calendar_id: str, item: Any) -> EventChange | None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if "@removed" in item:
        return EventChange(calendar_id, item["id"], deleted=True, raw=item)
    all_day = bool(item.get("isAllDay"))
    start = _when(item.get("start"), all_day)
    end = _when(item.get("end"), all_day)
    deleted = bool(item.get("isCancelled"))
    return EventChange(
        calendar_id,
        item["id"],
        deleted=deleted,
        summary=item.get("subject"),
        start=start,
        end=end,
        updated=parse_timestamp(item.get("lastModifiedDateTime")),
        all_day=all_day,
        raw=item,
        event=None if deleted else from_graph(item),
    )


def _when(value: Any, all_day: bool) -> datetime | None:
    if not isinstance(value, dict):
        return None
    if all_day:
        # All-day events are midnight-to-midnight in the event's own zone: keep the date, pin it to UTC.
        return date_midnight_utc(value.get("dateTime"))
    return parse_zoned(value.get("dateTime"), value.get("timeZone"))
