"""Outbound HTTP: one keep-alive client per worker (webhooks.http_client), one signed POST per attempt.

Every failure mode (refused, DNS, TLS, SSRF refusal, timeout, reset) comes back as an
:class:`Outcome` with ``status_code`` None and a readable error, never as an exception: each is a
recorded attempt and is retried like a 5xx.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from yarl import URL

from synchook import __version__
from synchook.settings import Settings
from synchook.storable import storable
from synchook.timeutil import utcnow
from webhooks.constants import RESPONSE_BODY_LIMIT
from webhooks.http_client import (
    ConnectError,
    DeliveryClient,
    DNSError,
    InvalidResponse,
    InvalidURLError,
    ReceiverClosed,
)
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


def open_session(settings: Settings) -> DeliveryClient:
    """The worker's shared client: kept-alive connections, each to an address the SSRF-checking resolver returned."""
    resolver = SafeResolver(
        allow_private=settings.allow_private_targets,
        nameservers=settings.dns_nameservers,
        timeout=settings.dns_timeout,
    )
    return DeliveryClient(resolver, excerpt_limit=RESPONSE_BODY_LIMIT, keepalive_timeout=30, dns_ttl=60)


async def post(
    session: DeliveryClient,
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
        response = await session.post(_target(url, allow_private), body, headers, timeout=timeout)
        outcome.status_code = response.status
        # The rest of an oversize body was never downloaded (the client closed that connection).
        outcome.response_body = response.excerpt.decode("utf-8", errors="replace") if response.excerpt else None
        if response.status in _RETRY_AFTER_STATUSES:
            outcome.retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
        if not outcome.ok:
            outcome.error = _status_error(response.status, response.headers.get("location"))
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


# A worker posts to the same few URLs again and again: parse each (and judge an IP literal) once, not per attempt.
# Immutable; an URL refused raises each time (nothing is cached).
@lru_cache(maxsize=4096)
def _target(url: str, allow_private: bool) -> URL:
    target = URL(url)
    check_literal_target(target, allow_private)
    return target


def _status_error(status: int, location: str | None) -> str:
    if 300 <= status < 400:
        where = f" to {location[:300]}" if location else ""
        return f"HTTP {status}: redirect{where} not followed"
    return f"HTTP {status}"


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of why an attempt got no HTTP response."""
    # Raised as they are: the client wraps only what it reports as a connection or DNS error.
    if isinstance(exc, ForbiddenTargetError):
        text = f"forbidden target: {exc}"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS certificate error: {exc}"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS error: {exc}"
    elif isinstance(exc, DNSError):
        text = f"DNS error: {exc}"
    elif isinstance(exc, ConnectError):
        text = f"connection error: {exc}"
    elif isinstance(exc, ReceiverClosed):
        text = "connection closed by the receiver before a response"
    elif isinstance(exc, InvalidURLError):
        text = f"invalid URL: {exc}"
    elif isinstance(exc, InvalidResponse):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        text = f"unexpected error: {type(exc).__name__}"
    return text[:_ERROR_LIMIT]
