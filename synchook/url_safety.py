"""Which webhook URLs Synchook will call: SSRF defence for integrator-supplied targets.

Two checks, both refusing unless private targets are allowed (``SYNCHOOK_ALLOW_PRIVATE_TARGETS``):

- :func:`validate_webhook_url`: syntax, at creation and update. Absolute http(s), no credentials,
  no control characters, https only, and no host that is, or is spelled as, a non-public address.
- :func:`check_resolves_public`: the host's current DNS answers, every one of them public.

Names are resolved with c-ares (``aiodns``), asynchronously and with a per-query timeout: a name whose
nameserver never answers costs one pending query, not a thread of the loop's small default executor, so a
burst of such names starves no other request. ``/etc/hosts`` is read first, as getaddrinfo would.

Names are re-checked at connection time by ``webhooks.safe_resolver`` (DNS rebinding); this module
decides what "public" means for both.

IPv4 literals are read the way browsers and ``inet_aton`` read them (``2130706433``, ``0177.0.0.1``,
``0x7f.1``, ``127.1`` are all 127.0.0.1), because that is how the resolver on the delivery path
will read them too. Messages never include the URL: it may carry credentials or tokens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiodns
import pycares

from synchook.settings import Settings

__all__ = [
    "ALLOW_PRIVATE_HINT",
    "MAX_URL_LENGTH",
    "Resolver",
    "UnsafeURL",
    "check_resolves_public",
    "dns_options",
    "is_forbidden_address",
    "parse_ip_host",
    "validate_webhook_url",
]

MAX_URL_LENGTH = 2048
ALLOW_PRIVATE_HINT = "set SYNCHOOK_ALLOW_PRIVATE_TARGETS=true to allow private targets"
_ALLOW_HTTP_HINT = "set SYNCHOOK_ALLOW_PRIVATE_TARGETS=true to allow plain http"

_TOO_SLOW = "URL host did not resolve in time (its DNS servers did not answer)"

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Iterable[str]]]
"""Resolves ``(host, port)`` to IP address strings; injectable so tests control DNS."""


class UnsafeURL(ValueError):
    """A webhook URL Synchook refuses to call; ``reason`` says why and, where it applies, how to allow it."""

    def __init__(self, reason: str, *, private_target: bool = False, hint: str = ALLOW_PRIVATE_HINT) -> None:
        self.reason = f"{reason}; {hint}" if private_target else reason
        self.private_target = private_target
        super().__init__(self.reason)


_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv4Address("168.63.129.16"),  # Azure wire server (a public-looking address)
        IPv4Address("192.0.0.192"),  # Oracle Cloud
        IPv6Address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)

# Explicit ranges first, for a precise reason; anything else Python's IANA tables call non-global
# is refused afterwards as "non-public".
_V4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a shared (CGNAT) address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address"),
    )
)
_V6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fe80::/10", "a link-local address"),
        ("fc00::/7", "a unique local (private) address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("100::/64", "a discard-only address"),
        ("2001:db8::/32", "a documentation address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("2001::/32", "a Teredo address"),
        ("3fff::/20", "a documentation address"),  # RFC 9637; Python's tables predate it
        # RFC 2765 SIIT: an IPv4-translated address names an IPv4 host behind a translator, never a public
        # IPv6 one; refused whole rather than trusting whatever translator sits on the path.
        ("::ffff:0:0:0/96", "an IPv4-translated (SIIT) address"),
    )
)
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")

# Names that never denote a public host. Single-label names are refused separately: they only
# resolve through search domains, i.e. to internal services.
_FORBIDDEN_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_FORBIDDEN_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan", ".intranet")
_HOST_CHARS = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
# RFC 3986 IP-literal = "[" ( IPv6address / IPvFuture ) "]"; IPvFuture = "v" 1*HEXDIG "." 1*(...)
_IPVFUTURE = re.compile(r"[vV][0-9a-fA-F]+\..+")


def is_forbidden_address(ip: str | IPAddress) -> str | None:
    """Why ``ip`` must not be called unless private targets are allowed, or None if it is public."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            return "an unparseable address"  # fail closed
    if isinstance(ip, IPv6Address) and ip.scope_id:
        ip = IPv6Address(int(ip))  # the zone changes nothing about where the address points
    if ip in _METADATA_ADDRESSES:
        return f"a cloud metadata endpoint ({ip})"
    if isinstance(ip, IPv4Address):
        for v4net, why in _V4_RANGES:
            if ip in v4net:
                return f"{why} ({ip})"
        return None if ip.is_global else f"a non-public address ({ip})"
    return _forbidden_v6(ip)


def _forbidden_v6(ip: IPv6Address) -> str | None:
    # Addresses that carry an IPv4 address reach that IPv4 address: judge the embedded one.
    embedded = ip.ipv4_mapped or ip.sixtofour or (IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
    if embedded is not None:
        inner = is_forbidden_address(embedded)
        return None if inner is None else f"{inner} embedded in IPv6 {ip}"
    for v6net, why in _V6_RANGES:
        if ip in v6net:
            return f"{why} ({ip})"
    if ip in _IPV4_COMPATIBLE:
        return f"a deprecated IPv4-compatible address ({ip})"
    return None if ip.is_global else f"a non-public address ({ip})"


def _parse_ipv4_number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if not _DIGITS.fullmatch(part):
        return None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a URL host denotes if it is an IP literal in any spelling; None for a name.

    Raises UnsafeURL for a host that ends in a number but is no valid address (browsers reject those too).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if _IPVFUTURE.fullmatch(host):
            raise UnsafeURL("URL host is an IPvFuture literal (RFC 3986), which no delivery can reach")
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            raise UnsafeURL("URL host is not a valid IPv6 address") from None
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not (_DIGITS.fullmatch(last) or _HEX.fullmatch(last)):
        return None  # a name, e.g. example.com or 1.2.3.example
    numbers = [_parse_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UnsafeURL("URL host looks like an IPv4 address but is not a valid one")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise UnsafeURL("URL host looks like an IPv4 address but is out of range")
    total = values[-1]
    for i, n in enumerate(values[:-1]):
        total += n << (8 * (3 - i))
    return IPv4Address(total)


def _check_chars(url: str) -> None:
    # CR/LF would split a request line or header; other controls and spaces are never valid in a URL
    # and are read differently by different parsers.
    for ch in url:
        if ord(ch) < 0x21 or ord(ch) == 0x7F or ch.isspace() or 0x80 <= ord(ch) < 0xA0:
            raise UnsafeURL("URL must not contain whitespace or control characters")


def _normalize_host(raw: str) -> str:
    try:
        host = raw.encode("idna").decode("ascii") if not raw.isascii() else raw
    except UnicodeError:
        raise UnsafeURL("URL host is not a valid domain name") from None
    host = host.lower()
    if len(host) > 253 or not _HOST_CHARS.fullmatch(host) or any(len(label) > 63 for label in host.split(".")):
        raise UnsafeURL("URL host is not a valid domain name")
    return host


def validate_webhook_url(url: str, *, allow_private: bool) -> str:
    """Check a webhook URL's syntax (and any literal address) and return it normalized; raises UnsafeURL."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    _check_chars(url)
    if "\\" in url.split("?", 1)[0]:
        raise UnsafeURL("URL must not contain backslashes")  # browsers read them as '/', urllib does not
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("URL is malformed (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("URL must be an absolute http or https URL")
    if not parts.netloc:
        raise UnsafeURL("URL must include a host")
    if "@" in parts.netloc:
        raise UnsafeURL("URL must not contain credentials (user:password@)")
    if port == 0:
        raise UnsafeURL("URL port must be between 1 and 65535")
    raw_host = parts.netloc.rsplit(":", 1)[0] if port is not None or parts.netloc.endswith(":") else parts.netloc
    if not raw_host or "%" in raw_host:
        raise UnsafeURL("URL must include a valid host")
    if not allow_private and scheme != "https":
        raise UnsafeURL("URL must use https", private_target=True, hint=_ALLOW_HTTP_HINT)

    # IDNA-map before looking for an address: fullwidth digits and ideographic full stops fold to
    # ASCII, so a fullwidth-spelled 127.0.0.1 is judged as the 127.0.0.1 the resolver will see.
    host = raw_host if raw_host.startswith("[") else _normalize_host(raw_host)
    address = parse_ip_host(host)
    if address is not None:
        host = f"[{address}]" if isinstance(address, IPv6Address) else str(address)
        if not allow_private:
            reason = is_forbidden_address(address)
            if reason is not None:
                raise UnsafeURL(f"URL host is {reason}", private_target=True)
    else:
        if not allow_private:
            bare = host.rstrip(".")
            if bare in _FORBIDDEN_NAMES or bare.endswith(_FORBIDDEN_SUFFIXES) or bare == "metadata.google.internal":
                raise UnsafeURL("URL host is a local or internal name", private_target=True)
            if "." not in bare:
                raise UnsafeURL("URL host must be a fully qualified domain name", private_target=True)

    default_port = 443 if scheme == "https" else 80
    netloc = host if port is None or port == default_port else f"{host}:{port}"
    normalized = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    # Checked again on what is stored and called: IDNA turns a few unicode characters into many.
    if len(normalized) > MAX_URL_LENGTH:
        raise UnsafeURL(f"URL is longer than {MAX_URL_LENGTH} characters once its host is IDNA-encoded")
    return normalized


def dns_options(nameservers: Sequence[str], timeout: float) -> dict[str, Any]:
    """aiodns.DNSResolver arguments: two tries fit within ``timeout`` (c-ares doubles the second try's wait)."""
    return {"nameservers": list(nameservers) or None, "timeout": timeout / 3, "tries": 2}


async def _resolve(host: str, port: int, *, nameservers: Sequence[str] = (), timeout: float = 5.0) -> list[str]:
    # A c-ares channel per lookup, closed however the lookup ends (answered, failed, or cancelled by the caller's
    # timeout): a channel outliving its lookup calls back into whatever loop it was made on, and once that loop
    # is closed (a test's, or a cancelled request's) the callback fails in another request's time (seen in CI).
    # No thread is held either way; creating a channel costs microseconds against a network round trip.
    resolver = aiodns.DNSResolver(**dns_options(nameservers, timeout))
    try:
        result = await resolver.getaddrinfo(host, port=port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
    finally:
        await resolver.close()
    return [node.addr[0].decode("ascii") for node in result.nodes]


async def _getaddrinfo(host: str, port: int) -> list[str]:
    return await _resolve(host, port)


async def check_resolves_public(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
    timeout: float = 5.0,
    nameservers: Sequence[str] = (),
) -> str:
    """Validate ``url`` and refuse it if its host resolves to any non-public address; returns it normalized.

    ``nameservers`` (``ip`` or ``ip:port``; empty: the system's) and ``timeout`` configure the default resolver.
    """
    normalized = validate_webhook_url(url, allow_private=allow_private)
    if allow_private:
        return normalized
    parts = urlsplit(normalized)
    host = parts.hostname or ""
    if parse_ip_host(host) is not None:
        return normalized  # a literal address, already judged by validate_webhook_url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if resolver is None:
        # The system's servers through _getaddrinfo, the one name tests replace to control DNS.
        resolver = _configured(nameservers, timeout) if nameservers else _getaddrinfo
    try:
        async with asyncio.timeout(timeout):
            addresses = list(await resolver(host, port))
    except TimeoutError:
        raise UnsafeURL(_TOO_SLOW) from None
    except aiodns.error.DNSError as exc:
        timed_out = bool(exc.args) and exc.args[0] == pycares.errno.ARES_ETIMEOUT
        raise UnsafeURL(_TOO_SLOW if timed_out else "URL host could not be resolved") from None
    except (OSError, UnicodeError):
        raise UnsafeURL("URL host could not be resolved") from None
    if not addresses:
        raise UnsafeURL("URL host could not be resolved")
    for address in addresses:
        reason = is_forbidden_address(address)
        if reason is not None:
            raise UnsafeURL(f"URL host resolves to {reason}", private_target=True)
    return normalized


def _configured(nameservers: Sequence[str], timeout: float) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return await _resolve(host, port, nameservers=nameservers, timeout=timeout)

    return resolve


async def check_as_configured(settings: Settings, url: str) -> str:
    """`check_resolves_public` with the deployment's DNS servers, DNS timeout and private-target allowance."""
    return await check_resolves_public(
        url,
        allow_private=settings.allow_private_targets,
        nameservers=settings.dns_nameservers,
        timeout=settings.dns_timeout,
    )
