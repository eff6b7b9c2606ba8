"""Outbound HTTP: one keep-alive aiohttp session per worker, one signed POST per attempt.

Every failure mode (refused, DNS, TLS, SSRF refusal, timeout, reset) comes back as an
:class:`Outcome` with ``status_code`` None and a readable error, never as an exception: each is a
recorded attempt and is retried like a 5xx.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import aiohttp
from yarl import URL

from synchook import __version__
from synchook.settings import Settings
from synchook.storable import storable
from synchook.timeutil import utcnow
from webhooks.constants import RESPONSE_BODY_LIMIT
from webhooks.retry import parse_retry_after
from webhooks.safe_resolver import ForbiddenTargetError, SafeResolver, check_literal_target

__all__ = ["USER_AGENT", "Outcome", "open_session", "post"]

USER_AGENT = f"synchook/{__version__}"
_ERROR_LIMIT = 1000
_RETRY_AFTER_STATUSES = frozenset((429, 503))


@dataclass(slots=True)
class Outcome:
    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after: float | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The worker's shared session: pooled keep-alive connections, the SSRF-checking resolver, no env proxies."""
    connector = aiohttp.TCPConnector(
        limit=max(settings.delivery_concurrency, 1),
        limit_per_host=0,
        keepalive_timeout=30,
        ttl_dns_cache=60,
        resolver=SafeResolver(
            allow_private=settings.allow_private_targets,
            nameservers=settings.dns_nameservers,
            timeout=settings.dns_timeout,
        ),
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,  # a proxy would resolve names for us, past the SSRF check
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool,
) -> Outcome:
    """POST ``body`` exactly as signed; redirects are not followed (a 3xx is a failed attempt)."""
    started_at = utcnow()
    start = time.perf_counter()
    outcome = Outcome(started_at=started_at, duration_ms=0)
    try:
        async with session.post(
            _target(url, allow_private),
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=_timeout(timeout),
        ) as response:
            outcome.status_code = response.status
            outcome.response_body = await _read_excerpt(response)
            if response.status in _RETRY_AFTER_STATUSES:
                outcome.retry_after = parse_retry_after(response.headers.get("Retry-After"), utcnow())
            if not outcome.ok:
                outcome.error = _status_error(response.status, response.headers.get("Location"))
    except TimeoutError:
        outcome.timed_out = True
        outcome.error = f"timeout: no complete response within {timeout:g}s"
    except Exception as exc:
        outcome.error = describe_error(exc)
    outcome.duration_ms = max(0, round((time.perf_counter() - start) * 1000))
    # The receiver wrote the body, the Location header and some exception texts: one NUL or stray byte in
    # them must not fail the recorder's transaction, which holds other tenants' outcomes too.
    outcome.response_body = storable(outcome.response_body)
    outcome.error = storable(outcome.error)
    return outcome


# A worker posts to the same few URLs again and again: parse each (and judge an IP literal) once, not per attempt,
# and share one timeout object per value. Both are immutable; an URL refused raises each time (nothing is cached).
@lru_cache(maxsize=4096)
def _target(url: str, allow_private: bool) -> URL:
    target = URL(url)
    check_literal_target(target, allow_private)
    return target


@lru_cache(maxsize=16)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


async def _read_excerpt(response: aiohttp.ClientResponse) -> str | None:
    chunks: list[bytes] = []
    size = 0
    while size < RESPONSE_BODY_LIMIT:
        chunk = await response.content.read(RESPONSE_BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if response.content.at_eof():
            break  # all of it read: no second read (an await) just to be told so, per attempt
    if not chunks:
        return None
    # The rest of an oversize body is never downloaded: leaving the block closes that connection.
    return b"".join(chunks)[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace")


def _status_error(status: int, location: str | None) -> str:
    if 300 <= status < 400:
        where = f" to {location[:300]}" if location else ""
        return f"HTTP {status}: redirect{where} not followed"
    return f"HTTP {status}"


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of why an attempt got no HTTP response."""
    forbidden = _find(exc, ForbiddenTargetError)
    if forbidden is not None:
        text = f"forbidden target: {forbidden}"
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        text = f"TLS certificate error: {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientSSLError) or _find(exc, ssl.SSLError) is not None:
        text = f"TLS error: {exc}"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        text = f"DNS error: {exc}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"connection error: {exc}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        text = "connection closed by the receiver before a response"
    elif isinstance(exc, aiohttp.InvalidURL):
        text = f"invalid URL: {exc}"
    elif isinstance(exc, (aiohttp.ClientError, OSError, asyncio.IncompleteReadError)):
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        text = f"unexpected error: {type(exc).__name__}"
    return text[:_ERROR_LIMIT]


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, kind):
            return os_error
        seen = seen.__cause__ or seen.__context__
    return None
