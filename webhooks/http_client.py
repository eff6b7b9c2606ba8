"""The deliveries' HTTP/1.1 client: one POST per attempt over kept-alive connections, and nothing else.

aiohttp's client cost a worker ~150 µs of CPU per POST (a ClientRequest and its header merging, a task to
write the body, its response and stream objects): 45 % of a worker's samples at 2,000 events/s in scenario (b)
of the bench. Here the same POST takes ~35 µs: the request written in one call, the response parsed by
httptools (uvicorn's C parser, llhttp), each origin's idle connections kept for the next attempt. A delivery
needs no more than that: redirects are not followed (the contract), no cookies, no proxy (a proxy would resolve
names past the SSRF check), no decompression (the excerpt is stored as the receiver sent it).

Every connection goes to an address :class:`webhooks.safe_resolver.SafeResolver` returned (names) or
``check_literal_target`` passed (IP literals, which the caller checks): the SSRF defence sees every address
connected to. Answers are cached for ``dns_ttl`` seconds, as aiohttp's connector cached them.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools
from yarl import URL

from webhooks.safe_resolver import ForbiddenTargetError, SafeResolver

__all__ = [
    "ConnectError",
    "DNSError",
    "DeliveryClient",
    "InvalidResponse",
    "InvalidURLError",
    "ReceiverClosed",
    "Response",
]


class ConnectError(OSError):
    """No connection to any address of the target (refused, unreachable...)."""


class DNSError(OSError):
    """The target's name did not resolve."""


class ReceiverClosed(ConnectionError):
    """The receiver closed the connection before its response was complete."""


class InvalidResponse(ValueError):
    """What came back is not an HTTP/1.x response."""


class InvalidURLError(ValueError):
    """Not an http(s) URL with a host."""

    def __init__(self, url: Any) -> None:
        super().__init__(f"not an http(s) URL with a host: {str(url)[:200]}")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    excerpt: bytes  # the body's first ``excerpt_limit`` bytes


Origin = tuple[str, str, int]  # scheme, host, port

# A response whose status line and headers take more is refused (aiohttp's limit was 8 KiB a line, 100 headers).
HEAD_LIMIT = 64 * 1024


class _Connection(asyncio.Protocol):
    """One connection to an origin: at most one request in flight, its response parsed as it arrives."""

    def __init__(self, excerpt_limit: int) -> None:
        self._limit = excerpt_limit
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._head = 0  # bytes received of the current response while its headers were not complete
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._status: int | None = None
        self.reusable = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: a receiver that talks out of turn is not kept
            return
        try:
            self._parser.feed_data(data)
            if self._status is None:
                # The parser keeps a header until it ends: a receiver sending one without end is cut off here.
                self._head += len(data)
                if self._head > HEAD_LIMIT:
                    raise httptools.HttpParserError(f"headers longer than {HEAD_LIMIT} bytes")
        except httptools.HttpParserUpgrade:
            self._finish(keep=False)  # 101 Switching Protocols: not a success, and the connection is not HTTP now
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._status is not None and not self._status_is_interim():
                # A response read until the connection closes (no length, not chunked) ends here.
                self._finish(keep=False)
            else:
                self._fail(ReceiverClosed("connection closed by the receiver before a response"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # As aiohttp read them: a stray byte is kept as a surrogate, which storable() makes U+FFFD before it is stored.
        self._headers[name.decode("latin-1").lower()] = value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._size < self._limit:
            self._body.append(body)
        self._size += len(body)
        if self._size >= self._limit and not self._status_is_interim():
            # The rest of an oversize body is not read: the excerpt is all that is kept, and the connection closed.
            self._finish(keep=False)
            self.close()

    def on_message_complete(self) -> None:
        if self._status_is_interim():
            self._reset()  # 100 Continue and the like: the response follows
            return
        self._finish(keep=self._parser.should_keep_alive())

    # requests

    def request(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._reset()
        self._head = 0
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _status_is_interim(self) -> bool:
        return self._status is not None and 100 <= self._status < 200 and self._status != 101

    def _finish(self, *, keep: bool) -> None:
        if self._waiter is None or self._waiter.done() or self._status is None:
            return
        self.reusable = keep and self._size < self._limit
        excerpt = b"".join(self._body)[: self._limit]
        self._waiter.set_result(Response(self._status, self._headers, excerpt))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class DeliveryClient:
    """Kept-alive connections per origin; :meth:`post` sends one request and reads its response (or its excerpt)."""

    def __init__(
        self,
        resolver: SafeResolver,
        *,
        excerpt_limit: int,
        keepalive_timeout: float = 30.0,
        dns_ttl: float = 60.0,
    ) -> None:
        self._resolver = resolver
        self._limit = excerpt_limit
        self._keepalive = keepalive_timeout
        self._dns_ttl = dns_ttl
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"DeliveryClient(origins={len(self._idle)})"

    async def post(self, url: URL, body: bytes, headers: dict[str, str], *, timeout: float) -> Response:
        """POST ``body`` to ``url`` with these headers (plus Host, Content-Length, Accept and, from the URL's userinfo,
        Authorization); the whole exchange within ``timeout`` seconds, else TimeoutError."""
        origin, request = _request(url, body, headers)
        async with asyncio.timeout(timeout):
            connection = self._idle_connection(origin) or await self._connect(origin)
            try:
                response = await connection.request(request)
            except BaseException:
                connection.close()  # a timeout or a failure mid-response: its state is unknown
                raise
        if connection.reusable and not connection.closed:
            self._keep(origin, connection)
        else:
            connection.close()
        return response

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        await self._resolver.close()

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the one used last: warm, least likely to have been closed by the receiver
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, deque())
        idle.append(connection)
        connection.idle_timer = asyncio.get_running_loop().call_later(
            self._keepalive, self._drop_idle, origin, connection
        )

    def _drop_idle(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.get(origin)
        if idle is not None and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[origin]
        connection.close()

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = self._tls_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for address in await self._resolve(host, port):
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._limit),
                    address,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            except ssl.SSLError:
                raise  # the address answered: a TLS failure is the receiver's, not a reason to try another
            except OSError as exc:
                last = exc
                continue
            return connection
        reason = (last.strerror or str(last)) if last is not None else "no address"
        raise ConnectError(f"Cannot connect to host {host}:{port} [{reason}]") from last

    async def _resolve(self, host: str, port: int) -> list[str]:
        if _is_ip_literal(host):
            return [host]  # checked by the caller (check_literal_target): no resolver judges a literal
        cached = self._addresses.get((host, port))
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            results = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except ForbiddenTargetError:
            raise
        except OSError as exc:
            raise DNSError(f"Cannot resolve host {host}: {exc.strerror or exc}") from exc
        addresses = list(dict.fromkeys(str(r["host"]) for r in results))
        if len(self._addresses) > 10_000:
            self._addresses.clear()
        self._addresses[(host, port)] = (now + self._dns_ttl, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _is_ip_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _request(url: URL, body: bytes, headers: dict[str, str]) -> tuple[Origin, bytes]:
    """The origin to send to and the request's bytes: request line, headers, body."""
    scheme = url.scheme
    host = url.raw_host
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidURLError(str(url))
    port = url.port or _DEFAULT_PORTS[scheme]
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == _DEFAULT_PORTS[scheme] else f"{bracketed}:{port}"
    lines = [f"POST {url.raw_path_qs or '/'} HTTP/1.1", f"Host: {host_header}", "Accept: */*"]
    if url.raw_user is not None:
        credentials = f"{url.user or ''}:{url.password or ''}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return (scheme, host, port), head.encode("latin-1") + body
