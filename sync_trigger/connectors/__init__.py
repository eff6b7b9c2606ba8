"""Calendar provider connectors: Google Calendar v3, Microsoft Graph and CalDAV, protocol only.

    connector = build_connector("google", session, endpoints, tokens, save_tokens)
    async for page in connector.changes(calendar_id, cursor=stored_cursor, window=window):
        apply(page.changes)                # upsert by (calendar_id, event_id); repeats happen
        if page.next_cursor:
            store(page.next_cursor)        # only the final page carries it

CursorExpired means: drop that calendar's local items and call again with cursor=None.
"""

from __future__ import annotations

import asyncio

import aiohttp

from sync_trigger.connectors.base import (
    CalendarInfo,
    ChangeChannel,
    ChangePage,
    ChannelGone,
    Connector,
    ConnectorError,
    CursorExpired,
    EventChange,
    ProviderEndpoints,
    ProviderError,
    ProviderRateLimited,
    ReauthRequired,
    Tokens,
    TokensCallback,
)
from sync_trigger.connectors.caldav import CalDAVConnector, CalDAVCredentials
from sync_trigger.connectors.caldav_http import UrlCheck
from sync_trigger.connectors.google import GoogleConnector
from sync_trigger.connectors.microsoft import MicrosoftConnector
from sync_trigger.connectors.throttle import RetryHook, RetryNotice, Sleep
from synchook.providers import Provider

__all__ = [
    "PROVIDERS",
    "CalDAVConnector",
    "CalDAVCredentials",
    "CalendarInfo",
    "ChangeChannel",
    "ChangePage",
    "ChannelGone",
    "Connector",
    "ConnectorError",
    "CursorExpired",
    "EventChange",
    "GoogleConnector",
    "MicrosoftConnector",
    "ProviderEndpoints",
    "ProviderError",
    "ProviderRateLimited",
    "ReauthRequired",
    "RetryHook",
    "RetryNotice",
    "Tokens",
    "UrlCheck",
    "build_connector",
]

_CONNECTORS: dict[str, type[GoogleConnector] | type[MicrosoftConnector]] = {
    Provider.GOOGLE: GoogleConnector,
    Provider.MICROSOFT: MicrosoftConnector,
}
# The providers a connector exists for: the OAuth ones above, and CalDAV (built apart: it takes a password).
PROVIDERS: tuple[Provider, ...] = (*(Provider(name) for name in _CONNECTORS), Provider.CALDAV)


def build_connector(
    provider: str,
    session: aiohttp.ClientSession,
    endpoints: ProviderEndpoints,
    tokens: Tokens,
    on_tokens_refreshed: TokensCallback,
    *,
    max_throttle_wait: float = 60.0,
    page_size: int | None = None,
    sleep: Sleep = asyncio.sleep,
    on_retry: RetryHook | None = None,
    caldav: CalDAVCredentials | None = None,
    check_url: UrlCheck | None = None,
) -> Connector:
    """The connector for `provider`; "caldav" takes `caldav` (server, username, password) and `check_url`
    (the URL-safety check every server URL, redirect and href passes) instead of OAuth tokens."""
    if provider == Provider.CALDAV:
        if caldav is None or check_url is None:
            raise ValueError("a CalDAV connector needs its credentials and a URL check")
        return CalDAVConnector(
            session, caldav, check_url,
            max_throttle_wait=max_throttle_wait, page_size=page_size, sleep=sleep, on_retry=on_retry,
        )  # fmt: skip
    connector_class = _CONNECTORS.get(provider)
    if connector_class is not None:
        return connector_class(
            session, endpoints, tokens, on_tokens_refreshed,
            max_throttle_wait=max_throttle_wait, page_size=page_size, sleep=sleep, on_retry=on_retry,
        )  # fmt: skip
    raise ValueError(f"unknown calendar provider {provider!r}")
