"""Connect-time SSRF defence for outbound deliveries.

A URL checked at creation can point somewhere else by delivery time (DNS rebinding, or simply a
changed record), so the check that matters is on the addresses the delivery client is about to connect
to. :class:`SafeResolver` sits in that client (webhooks.http_client) and refuses any name whose answers
include a non-public address; the client caches only what this resolver returned, so what it connects
to is always something that was checked.

The client never sends IP-literal hosts through the resolver: call :func:`check_literal_target`
before each request.

The inner resolver is aiohttp's c-ares ``AsyncResolver`` with a per-query timeout: a name whose
nameserver never answers holds no thread (aiohttp's default, ``ThreadedResolver``, holds one of the
loop's few executor threads for as long as the system resolver waits), so black-holed names delay no
other tenant's delivery. ``/etc/hosts`` is read first, as getaddrinfo would.

Use it as ``DeliveryClient(SafeResolver(allow_private=settings.allow_private_targets), ...)`` (webhooks.sender's
``open_session``); the client uses no proxy: a proxy would resolve names on our behalf, unchecked.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import AsyncResolver
from yarl import URL

from synchook.url_safety import ALLOW_PRIVATE_HINT, UnsafeURL, dns_options, is_forbidden_address, parse_ip_host

__all__ = ["ForbiddenTargetError", "SafeResolver", "check_literal_target"]


class ForbiddenTargetError(OSError):
    """Refusal to connect to a non-public address; an OSError, as any other reason a connection is not made."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        # (errno, strerror) form: strerror is what the attempt's error shows (None otherwise).
        super().__init__(errno.EPERM, f"refusing to connect to {host}: it is {reason}; {ALLOW_PRIVATE_HINT}")

    def __str__(self) -> str:
        return self.strerror or ""


class SafeResolver(AbstractResolver):
    """Wraps a resolver (aiohttp's default) and refuses names that resolve to any non-public address."""

    def __init__(
        self,
        *,
        allow_private: bool,
        inner: AbstractResolver | None = None,
        nameservers: Sequence[str] = (),
        timeout: float = 5.0,
    ) -> None:
        """``nameservers``: ``ip`` or ``ip:port`` entries, empty for the system's; ``timeout`` bounds one name."""
        if inner is None:
            # Needs a running loop, as aiohttp's own connector does.
            inner = AsyncResolver(**dns_options(nameservers, timeout))
        self._inner = inner
        self._allow_private = allow_private

    def __repr__(self) -> str:
        return f"SafeResolver(allow_private={self._allow_private}, inner={type(self._inner).__name__})"

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self._allow_private:
            _refuse_odd_literal(host)
        results = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return results
        # Refuse on ANY bad answer rather than dropping it: a name mixing public and private
        # answers is not a legitimate webhook target, and happy-eyeballs must not fall back to it.
        for result in results:
            reason = is_forbidden_address(result["host"])
            if reason is not None:
                raise ForbiddenTargetError(host, f"resolving to {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _refuse_odd_literal(host: str) -> None:
    # yarl keeps inet_aton spellings such as "0x7f.1" as names; getaddrinfo reads them as addresses, c-ares
    # asks DNS. Judge them as the address browsers and getaddrinfo see, whatever a nameserver answers.
    try:
        address = parse_ip_host(host)
    except UnsafeURL:
        return  # no address in any spelling: a name for the nameserver
    reason = is_forbidden_address(address) if address is not None else None
    if reason is not None:
        raise ForbiddenTargetError(host, reason)


def check_literal_target(url: str | URL, allow_private: bool) -> None:
    """Raise ForbiddenTargetError if ``url``'s host is an IP literal that is not public (no resolver sees literals)."""
    if allow_private:
        return
    host = (url if isinstance(url, URL) else URL(url)).raw_host or ""
    try:
        address = parse_ip_host(host)
    except UnsafeURL as exc:
        raise ForbiddenTargetError(host, "not a valid address") from exc
    if address is None:
        return  # a name: SafeResolver judges what it resolves to
    reason = is_forbidden_address(address)
    if reason is not None:
        raise ForbiddenTargetError(host, reason)
