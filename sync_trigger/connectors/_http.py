"""The one request loop both connectors use: auth header, 401 → refresh → retry once,
throttling and 5xx retries within a bounded wait, provider-specific error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from sync_trigger.connectors.base import ConnectorError, ProviderError, ProviderRateLimited, ReauthRequired
from sync_trigger.connectors.throttle import Backoff, RetryHook, Sleep, parse_retry_after
from synchook.storable import storable_json

logger = logging.getLogger(__name__)

# Transient server trouble: retried like throttling, but reported as provider_error when it never clears.
SERVER_RETRY_STATUSES = frozenset({500, 502, 503, 504})
# A \u escape of NUL or of a surrogate (a valid pair among them: walking the payload for nothing is harmless).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class Authenticator(Protocol):
    async def access_token(self) -> str: ...

    async def refresh(self, stale_access_token: str) -> None: ...


class ErrorPolicy(Protocol):
    """How one provider spells throttling and its other errors."""

    provider: str

    def is_throttle(self, status: int, payload: Any) -> bool: ...

    def error_for(self, status: int, payload: Any) -> ConnectorError: ...


@dataclass
class _Reply:
    status: int
    payload: Any
    retry_after: str | None


class Requester:
    """Sends JSON requests for one connection; `limit` bounds concurrent requests (Outlook allows 4 per mailbox)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: ErrorPolicy,
        *,
        auth: Authenticator | None = None,
        limit: int | None = None,
        max_throttle_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._session = session
        self._policy = policy
        self._auth = auth
        self._semaphore = asyncio.Semaphore(limit) if limit else None
        self._max_throttle_wait = max_throttle_wait
        self._sleep = sleep
        self._on_retry = on_retry

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        empty_ok: bool = False,
    ) -> Any:
        """The decoded JSON body of a 2xx reply; raises a ConnectorError otherwise.

        `json_body` is sent as JSON; `empty_ok` accepts a 2xx without a body (a 204) as `{}`.
        """
        provider = self._policy.provider
        backoff = Backoff(self._max_throttle_wait, self._sleep, self._on_retry)
        refreshed = False
        while True:
            send_headers = dict(headers or {})
            token = None
            if self._auth is not None:
                token = await self._auth.access_token()
                send_headers["Authorization"] = f"Bearer {token}"
            try:
                reply = await self._send(
                    method, url, params=params, headers=send_headers, data=data, json_body=json_body
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("%s request failed (%s), retrying", provider, type(exc).__name__)
                failed = f"{provider} unreachable ({_network_failure(exc)})"
                await backoff.wait(
                    None,
                    ProviderError(f"{failed}; gave up after retrying for {self._max_throttle_wait:g} s"),
                    cause=ProviderError(failed),
                )
                continue

            if 200 <= reply.status < 300:
                if reply.payload is None and empty_ok:
                    await backoff.recovered()
                    return {}
                if reply.payload is None:
                    raise ProviderError(f"{provider} sent an unreadable response", status=reply.status)
                await backoff.recovered()
                return reply.payload

            if reply.status == 401 and self._auth is not None and token is not None:
                if refreshed:
                    # A freshly refreshed token rejected again: the grant itself is no longer good.
                    raise ReauthRequired(f"{provider} rejected a freshly refreshed access token", status=401)
                refreshed = True
                logger.info("%s answered 401, refreshing the access token", provider)
                await self._auth.refresh(token)
                continue

            throttled = self._policy.is_throttle(reply.status, reply.payload)
            if throttled or reply.status in SERVER_RETRY_STATUSES:
                retry_after = parse_retry_after(reply.retry_after)
                exhausted: ConnectorError
                if throttled or reply.status == 503:
                    exhausted = ProviderRateLimited(
                        f"{provider} kept throttling for more than {self._max_throttle_wait:g}s", status=reply.status
                    )
                else:
                    exhausted = ProviderError(f"{provider} kept failing with HTTP {reply.status}", status=reply.status)
                logger.info(
                    "%s answered %s, retry %d (retry-after %s)",
                    provider,
                    reply.status,
                    backoff.attempt + 1,
                    retry_after,
                )
                cause = type(exhausted)(f"{provider} answered HTTP {reply.status}", status=reply.status)
                await backoff.wait(retry_after, exhausted, cause=cause)
                continue

            raise self._policy.error_for(reply.status, reply.payload)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        json_body: Any = None,
    ) -> _Reply:
        # The semaphore is held until the body is read: that is what the mailbox limit counts.
        async with (
            self._semaphore or contextlib.nullcontext(),
            self._session.request(
                method, url, params=params, headers=headers, data=data, json=json_body, allow_redirects=False
            ) as response,
        ):
            body = await response.read()
            return _Reply(response.status, _decode(body), response.headers.get("Retry-After"))


def _network_failure(exc: BaseException) -> str:
    # Host and port only: never the URL, whose query may carry a sync token.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        payload = json.loads(text)
    except ValueError:
        return None
    # Everything a provider sends (event titles, calendar names, ids, error messages) enters here. Strict JSON
    # refuses raw control characters, so a NUL or a lone surrogate can only come as a \u escape: only then walk.
    return storable_json(payload) if _UNSTORABLE_ESCAPE.search(text) else payload


def error_message(payload: Any) -> str:
    """The provider's own error text (Google and Graph both use error.message), trimmed for storage."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:200]
        if isinstance(error, str):
            return error[:200]
    return ""
