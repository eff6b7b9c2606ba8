from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from webhooks.safe_resolver import ForbiddenTargetError, SafeResolver, check_literal_target


class FixedResolver(AbstractResolver):
    """Answers from a table: the DNS an attacker controls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise OSError(f"no answer for {host}")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def loopback_port() -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="reached")

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    yield sock.getsockname()[1]
    await runner.cleanup()


async def post(url: str, resolver: AbstractResolver) -> int:
    connector = aiohttp.TCPConnector(resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session, session.post(url, data=b"{}") as response:
        return response.status


async def test_name_rebound_to_loopback_is_refused_at_connect_time(loopback_port: int) -> None:
    resolver = SafeResolver(allow_private=False, inner=FixedResolver({"hooks.example.com": ["127.0.0.1"]}))
    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
        await post(f"http://hooks.example.com:{loopback_port}/hook", resolver)
    assert isinstance(excinfo.value.os_error, ForbiddenTargetError)
    message = str(excinfo.value)
    assert "loopback" in message and "SYNCHOOK_ALLOW_PRIVATE_TARGETS=true" in message


async def test_mixed_public_and_private_answers_are_refused(loopback_port: int) -> None:
    inner = FixedResolver({"hooks.example.com": ["93.184.215.14", "127.0.0.1"]})
    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
        await post(f"http://hooks.example.com:{loopback_port}/hook", SafeResolver(allow_private=False, inner=inner))
    assert isinstance(excinfo.value.os_error, ForbiddenTargetError)


async def test_allow_private_lets_the_same_name_through(loopback_port: int) -> None:
    resolver = SafeResolver(allow_private=True, inner=FixedResolver({"hooks.example.com": ["127.0.0.1"]}))
    assert await post(f"http://hooks.example.com:{loopback_port}/hook", resolver) == 200


async def test_localhost_through_the_default_resolver_is_refused(loopback_port: int) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
        await post(f"http://localhost:{loopback_port}/hook", SafeResolver(allow_private=False))
    assert isinstance(excinfo.value.os_error, ForbiddenTargetError)


async def test_hex_spelled_loopback_through_the_default_resolver_is_refused(loopback_port: int) -> None:
    # yarl keeps "0x7f.1" as a name, so it reaches the resolver, which judges it as the 127.0.0.1 getaddrinfo reads.
    with pytest.raises(aiohttp.ClientConnectorError) as excinfo:
        await post(f"http://0x7f.1:{loopback_port}/hook", SafeResolver(allow_private=False))
    assert isinstance(excinfo.value.os_error, ForbiddenTargetError)


async def test_default_resolver_with_allow_private_connects(loopback_port: int) -> None:
    assert await post(f"http://localhost:{loopback_port}/hook", SafeResolver(allow_private=True)) in (200,)


async def test_ip_literal_bypasses_resolvers_so_check_literal_target_catches_it(loopback_port: int) -> None:
    url = f"http://127.0.0.1:{loopback_port}/hook"
    # Proof that the resolver alone is not enough: aiohttp connects to literals without asking it.
    assert await post(url, SafeResolver(allow_private=False, inner=FixedResolver({}))) == 200
    with pytest.raises(ForbiddenTargetError, match="loopback"):
        check_literal_target(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://999.1.1.1/",
    ],
)
def test_check_literal_target_refuses_non_public_literals(url: str) -> None:
    with pytest.raises(ForbiddenTargetError):
        check_literal_target(url, allow_private=False)


@pytest.mark.parametrize("url", ["https://8.8.8.8/", "https://[2606:4700:4700::1111]/", "https://hooks.example.com/"])
def test_check_literal_target_passes_public_literals_and_names(url: str) -> None:
    check_literal_target(url, allow_private=False)


def test_check_literal_target_allow_private() -> None:
    check_literal_target("http://127.0.0.1:8080/x", allow_private=True)


async def test_public_answers_pass_through_unchanged() -> None:
    inner = FixedResolver({"hooks.example.com": ["93.184.215.14"]})
    results = await SafeResolver(allow_private=False, inner=inner).resolve("hooks.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.215.14"]


async def test_close_closes_the_inner_resolver() -> None:
    inner = FixedResolver({})
    await SafeResolver(allow_private=False, inner=inner).close()
    assert inner.closed


def test_error_message_is_plain_and_says_how_to_allow() -> None:
    error = ForbiddenTargetError("hooks.example.com", "a loopback address (127.0.0.1)")
    assert isinstance(error, OSError)
    assert str(error) == (
        "refusing to connect to hooks.example.com: it is a loopback address (127.0.0.1); "
        "set SYNCHOOK_ALLOW_PRIVATE_TARGETS=true to allow private targets"
    )
