"""Access-token upkeep shared by both providers (PROVIDERS.md §1.4 and §2.4).

Refresh 60 s before expiry and on a 401. Google usually omits `refresh_token` in the reply
(keep the old one); Microsoft rotates it (replace the stored one). Every refresh is handed to
`on_tokens_refreshed` so the caller persists it before the old refresh token stops working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from sync_trigger.connectors._http import ErrorPolicy, Requester
from sync_trigger.connectors.base import (
    ConnectorError,
    ProviderEndpoints,
    ProviderError,
    ReauthRequired,
    Tokens,
    TokensCallback,
)
from sync_trigger.connectors.throttle import RetryHook, Sleep

logger = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(seconds=60)


class TokenEndpointPolicy:
    """Errors of an OAuth token endpoint: invalid_grant means the user must reconnect."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def is_throttle(self, status: int, payload: Any) -> bool:
        return status == 429

    def error_for(self, status: int, payload: Any) -> ConnectorError:
        code = payload.get("error") if isinstance(payload, dict) else None
        if code == "invalid_grant":
            return ReauthRequired(f"{self.provider} revoked or expired the refresh token; reconnect", status=status)
        # error_description is deliberately left out: it can echo request details.
        return ProviderError(f"{self.provider} token endpoint answered {status} {code or ''}".strip(), status=status)


class TokenManager:
    """Holds the live tokens of one connection and refreshes them at most once at a time."""

    def __init__(
        self,
        provider: str,
        requester: Requester,
        *,
        token_url: str,
        client_id: str | None,
        client_secret: str | None,
        tokens: Tokens,
        on_refreshed: TokensCallback,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.provider = provider
        self._requester = requester
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._tokens = tokens
        self._on_refreshed = on_refreshed
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    def _expiring(self) -> bool:
        expires_at = self._tokens.expires_at
        if expires_at is None:
            return False  # unknown lifetime: rely on the 401 path
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return expires_at - self._clock() <= REFRESH_MARGIN

    async def access_token(self) -> str:
        if self._expiring():
            await self.refresh(self._tokens.access_token)
        return self._tokens.access_token

    async def refresh(self, stale_access_token: str) -> None:
        async with self._lock:
            # Another request refreshed while we waited for the lock: use its token.
            if self._tokens.access_token != stale_access_token:
                return
            self._tokens = await self._exchange()
            logger.info("refreshed the %s access token (expires %s)", self.provider, self._tokens.expires_at)
            # Inside the lock so callers persist rotations in order (a rotated refresh token kills the old one).
            await self._on_refreshed(self._tokens)

    async def _exchange(self) -> Tokens:
        refresh_token = self._tokens.refresh_token
        if not refresh_token:
            raise ReauthRequired(f"no {self.provider} refresh token stored; reconnect")
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self._client_id is not None:
            form["client_id"] = self._client_id
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        payload = await self._requester.request(
            "POST", self._token_url, data=form, headers={"Accept": "application/json"}
        )
        access_token = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise ProviderError(f"{self.provider} token endpoint sent no access_token")
        expires_at = None
        expires_in = payload.get("expires_in")
        if isinstance(expires_in, int | float | str):
            try:
                expires_at = self._clock() + timedelta(seconds=float(expires_in))
            except ValueError:
                expires_at = None
        new_refresh = payload.get("refresh_token")
        return Tokens(
            access_token=access_token,
            refresh_token=new_refresh if isinstance(new_refresh, str) and new_refresh else refresh_token,
            expires_at=expires_at,
        )


def authorized_requester(
    session: aiohttp.ClientSession,
    policy: ErrorPolicy,
    *,
    provider: str,
    token_url: str,
    client_id: str | None,
    client_secret: str | None,
    tokens: Tokens,
    on_refreshed: TokensCallback,
    max_throttle_wait: float,
    sleep: Sleep,
    limit: int | None = None,
    on_retry: RetryHook | None = None,
) -> tuple[TokenManager, Requester]:
    """A provider's API requester that refreshes its tokens through that provider's token endpoint."""
    token_requester = Requester(
        session, TokenEndpointPolicy(provider), max_throttle_wait=max_throttle_wait, sleep=sleep, on_retry=on_retry
    )
    auth = TokenManager(
        provider,
        token_requester,
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        tokens=tokens,
        on_refreshed=on_refreshed,
    )
    requester = Requester(
        session, policy, auth=auth, limit=limit, max_throttle_wait=max_throttle_wait, sleep=sleep, on_retry=on_retry
    )
    return auth, requester


class OAuthConnector:
    """What both OAuth providers' connectors share: a requester that keeps the connection's tokens fresh.

    A subclass names its ``provider``, its API's error policy and its token endpoint; ``concurrency`` bounds
    its requests in flight (Graph throttles per mailbox).
    """

    provider: str
    concurrency: int | None = None

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: ProviderEndpoints,
        tokens: Tokens,
        on_tokens_refreshed: TokensCallback,
        *,
        max_throttle_wait: float = 60.0,
        page_size: int | None = None,
        sleep: Sleep = asyncio.sleep,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._page_size = page_size
        token_url, client_id, client_secret = self._token_endpoint(endpoints)
        self._auth, self._requester = authorized_requester(
            session,
            self._policy(),
            provider=self.provider,
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            tokens=tokens,
            on_refreshed=on_tokens_refreshed,
            max_throttle_wait=max_throttle_wait,
            sleep=sleep,
            on_retry=on_retry,
            limit=self.concurrency,
        )
        self._configure(endpoints)

    @property
    def tokens(self) -> Tokens:
        return self._auth.tokens

    def _policy(self) -> ErrorPolicy:
        raise NotImplementedError

    def _token_endpoint(self, endpoints: ProviderEndpoints) -> tuple[str, str | None, str | None]:
        """The token URL, client id and client secret."""
        raise NotImplementedError

    def _configure(self, endpoints: ProviderEndpoints) -> None:
        """The subclass's own set-up from the endpoints (its API's base URL)."""
