"""Plain data and the interface every calendar connector implements.

Connectors speak the provider protocol only (PROVIDERS.md); the calling service persists
tokens, cursors and events. Nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sync_trigger.connectors.normalized import NormalizedEvent

__all__ = [
    "CalendarInfo",
    "ChangeChannel",
    "ChangePage",
    "ChannelGone",
    "Connector",
    "ConnectorError",
    "CursorExpired",
    "EventChange",
    "ProviderEndpoints",
    "ProviderError",
    "ProviderRateLimited",
    "ReauthRequired",
    "Tokens",
    "TokensCallback",
]


@dataclass(frozen=True)
class ProviderEndpoints:
    """Where the providers live and which OAuth client refreshes tokens (built from settings)."""

    google_api_url: str = "https://www.googleapis.com"  # host part; /calendar/v3 follows
    google_token_url: str = "https://oauth2.googleapis.com/token"
    microsoft_graph_url: str = "https://graph.microsoft.com/v1.0"
    microsoft_token_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    microsoft_client_id: str | None = None
    microsoft_client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Tokens:
    """OAuth tokens of one connection; `expires_at` is when the access token dies (UTC)."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        # Tokens end up in tracebacks and log lines; never show them.
        refresh = "'***'" if self.refresh_token else "None"
        return f"Tokens(access_token='***', refresh_token={refresh}, expires_at={self.expires_at!r})"

    __str__ = __repr__


TokensCallback = Callable[[Tokens], Awaitable[None]]


@dataclass(frozen=True)
class CalendarInfo:
    id: str
    name: str
    deleted: bool = False


@dataclass
class EventChange:
    """One event as the provider reported it; `deleted` events may carry nothing but the id.

    Times are timezone-aware UTC; all-day events start/end at 00:00 UTC of their date.
    The same change can be reported twice in one round (Graph does this): callers upsert
    by (calendar_id, event_id) and must treat repeats as harmless. `event` is the item as the
    normalised event of CONTRACT §6.1 (PROVIDERS.md §5), set whenever `deleted` is false.
    """

    calendar_id: str
    event_id: str
    deleted: bool
    summary: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    updated: datetime | None = None
    all_day: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    event: NormalizedEvent | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ChangeChannel:
    """A push channel as the provider confirmed it (PROVIDERS.md §1.5, §2.5): Google's channel (its id is ours,
    `resource_id` is needed to stop it) or a Graph subscription (its id is Graph's). No secret is kept here."""

    channel_id: str
    expires_at: datetime
    resource_id: str | None = None


@dataclass
class ChangePage:
    """One provider page. `next_cursor` is set only on the final page of a round."""

    changes: list[EventChange]
    next_cursor: str | None = None


class ConnectorError(Exception):
    """Base of every connector failure; `message` is safe to store and show to users."""

    code: ClassVar[str] = "connector_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, status={self.status!r})"


class ReauthRequired(ConnectorError):
    """The refresh token is dead (invalid_grant) or missing: the user must reconnect."""

    code = "reauth_required"


class ProviderRateLimited(ConnectorError):
    """Throttling did not clear within `max_throttle_wait` seconds."""

    code = "provider_rate_limited"


class CursorExpired(ConnectorError):
    """The sync token / deltaLink is gone (410): drop the calendar's local items, sync with cursor=None."""

    code = "full_sync_required"


class ChannelGone(ConnectorError):
    """The push channel or subscription no longer exists at the provider (404): create a new one."""

    code = "channel_gone"


class ProviderError(ConnectorError):
    """Any other provider failure: permanent 4xx, or 5xx/network errors that outlived the retries."""

    code = "provider_error"


class Connector(Protocol):
    provider: str

    @property
    def tokens(self) -> Tokens:
        """The tokens currently in use (after any refresh)."""
        ...

    async def list_calendars(self) -> list[CalendarInfo]:
        """Every calendar of the account that is not deleted."""
        ...

    def changes(
        self,
        calendar_id: str,
        *,
        cursor: str | None,
        window: tuple[datetime, datetime] | None = None,
    ) -> AsyncIterator[ChangePage]:
        """Stream one sync round page by page: full over `window` when cursor is None, else incremental."""
        ...
