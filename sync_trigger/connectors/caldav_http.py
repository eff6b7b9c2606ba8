"""HTTP for CalDAV: Basic auth, every URL through the URL-safety check, redirects followed by hand, and the
usual bounded retries (network errors, 5xx, 429/503 with `Retry-After`) of the other connectors.

401 is final here: a Basic password cannot be refreshed, so it means the user must reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from sync_trigger.connectors.base import ConnectorError, ProviderError, ProviderRateLimited, ReauthRequired
from sync_trigger.connectors.throttle import Backoff, RetryHook, Sleep, parse_retry_after

__all__ = ["DavReply", "DavTransport", "UrlCheck"]

logger = logging.getLogger(__name__)

# Returns the URL (normalized) if Synchook may call it, raises ValueError saying why otherwise.
UrlCheck = Callable[[str], Awaitable[str]]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_RETRY = frozenset({500, 502, 503, 504})
_MAX_BODY = 64 * 1024 * 1024  # a calendar-query of a few thousand events is a few MiB; more is abuse


@dataclass
class DavReply:
    status: int
    body: bytes
    url: str  # where the answer came from, after redirects: hrefs resolve against it


class DavTransport:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        username: str,
        password: str,
        check_url: UrlCheck,
        *,
        max_throttle_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._session = session
        basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {basic}"
        self._check_url = check_url
        self._max_throttle_wait = max_throttle_wait
        self._sleep = sleep
        self._on_retry = on_retry

    def __repr__(self) -> str:
        return "DavTransport(authorization='***')"

    async def request(self, method: str, url: str, body: bytes | None = None, *, depth: str | None = None) -> DavReply:
        """The final answer after redirects and retries; raises ReauthRequired on 401, ConnectorErrors on give-up."""
        for _ in range(_MAX_REDIRECTS + 1):
            url = await self._safe(url)
            reply, location = await self._with_retries(method, url, body, depth)
            if location is None:
                return reply
            target = urljoin(url, location)
            # Only to the same scheme (no https → http downgrade that would send the password in clear).
            if urlsplit(target).scheme != urlsplit(url).scheme:
                raise ProviderError("CalDAV server redirected to another scheme; refused", status=reply.status)
            url = target
        raise ProviderError("CalDAV server redirected too many times")

    async def _safe(self, url: str) -> str:
        try:
            return await self._check_url(url)
        except ValueError as exc:
            # The reason names the host's kind ("a private address"), never the password.
            raise ProviderError(f"CalDAV server URL refused: {exc}") from None

    async def _with_retries(
        self, method: str, url: str, body: bytes | None, depth: str | None
    ) -> tuple[DavReply, str | None]:
        backoff = Backoff(self._max_throttle_wait, self._sleep, self._on_retry)
        headers = {"Authorization": self._authorization, "Content-Type": "application/xml; charset=utf-8"}
        if depth is not None:
            headers["Depth"] = depth
        while True:
            try:
                async with self._session.request(
                    method, url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    location = response.headers.get("Location")
                    payload = await _read_capped(response.content, _MAX_BODY)
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("caldav request failed (%s), retrying", type(exc).__name__)
                failed = f"CalDAV server unreachable ({type(exc).__name__})"
                await backoff.wait(
                    None,
                    ProviderError(f"{failed}; gave up after retrying for {self._max_throttle_wait:g} s"),
                    cause=ProviderError(failed),
                )
                continue
            if len(payload) > _MAX_BODY:
                raise ProviderError("CalDAV server sent an answer larger than 64 MiB")
            if status == 401:
                raise ReauthRequired("CalDAV server rejected the username or password", status=401)
            if status in _REDIRECTS and location:
                return DavReply(status, payload, url), location
            if status == 429 or status in _RETRY:
                exhausted: ConnectorError
                if status in (429, 503):
                    exhausted = ProviderRateLimited(
                        f"CalDAV server kept throttling for more than {self._max_throttle_wait:g}s", status=status
                    )
                else:
                    exhausted = ProviderError(f"CalDAV server kept failing with HTTP {status}", status=status)
                cause = type(exhausted)(f"CalDAV server answered HTTP {status}", status=status)
                await backoff.wait(parse_retry_after(retry_after), exhausted, cause=cause)
                continue
            await backoff.recovered()
            return DavReply(status, payload, url), None


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first ``limit + 1`` bytes or more when it is longer than ``limit``.

    Not ``stream.read(limit + 1)``: that returns what has arrived so far, and a 207 answer that Radicale sent in
    pieces came back cut short (a thousand events' calendar-query, parsed as unreadable XML).
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)
