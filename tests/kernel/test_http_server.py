"""`synchook api`'s HTTP protocol (synchook.http.server): a response reaches the socket in one write, whole.

uvicorn wrote a response's head and its body separately (two system calls, two segments for the client to wake up
for); the writes of one loop turn now go out together. What must not change: the bytes, keep-alive, a response
that closes its connection arriving whole, a large body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from synchook.context import AppContext
from synchook.http.server import HttpProtocol
from synchook.root.app import create_app
from synchook.settings import Settings
from tests.conftest import serve
from tests.factories import make_tenant
from tests.factories.webhooks import make_subscription

# The real transport's writes, per connection, in order (the socket's side of the protocol).
WRITES: list[bytes] = []


class _Recorder:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(HttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Recorder(transport))  # type: ignore[arg-type]


@pytest.fixture
async def recorded_url(settings: Settings, app_ctx: AppContext) -> AsyncIterator[str]:
    WRITES.clear()
    async with serve(create_app(settings, context=app_ctx), http=RecordingProtocol) as url:
        yield url


async def test_a_json_answer_is_one_write(app_ctx: AppContext, recorded_url: str) -> None:
    tenant = await make_tenant(app_ctx)
    sub = await make_subscription(app_ctx, tenant.workspace_id, url="https://example.com/hook")
    async with httpx.AsyncClient(base_url=recorded_url) as http:
        answers = [await http.get(f"/v1/webhooks/subscriptions/{sub.id}", headers=tenant.headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    # One connection (keep-alive), three responses, three writes: head and body together (main: six).
    assert len(WRITES) == 3
    for write, answer in zip(WRITES, answers, strict=True):
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == answer.content
        assert answer.json()["data"]["id"] == sub.id


async def test_a_response_that_closes_its_connection_arrives_whole(recorded_url: str) -> None:
    host, port = recorded_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), timeout=10)  # to the server's end of the connection
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), received[:200]
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    assert lengths == [len(body)] and len(body) > 10_000
    assert b"".join(WRITES) == received
