"""The machine's raw limit: an aiohttp client posting signed payloads straight to the receiver (no queue, no DB).

The ratios' yardstick, as (e)'s is a bare starlette endpoint: a standard client, the same from round to round.
Since the thirteenth round the deliveries have their own client (webhooks.http_client), ~4x cheaper per POST
than aiohttp's; on 2 cores the client's CPU is taken from the receiver's, so the same receiver takes more from
it. :func:`engine_client_limit` measures that too, the ceiling with the engine's own client, printed beside.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from subscriptions.keys import generate_webhook_secret
from synchook.ids import new_id
from tests.factories.webhooks import sync_data
from webhooks.constants import RESPONSE_BODY_LIMIT
from webhooks.http_client import DeliveryClient
from webhooks.safe_resolver import SafeResolver
from webhooks.sender import USER_AGENT
from webhooks.signing import build_headers, signer_for

Post = Callable[[str, bytes, dict[str, str]], Awaitable[int]]  # url, body, headers -> status


async def raw_limit(receiver_url: str, *, requests: int = 20_000, concurrency: int = 64) -> float:
    """Signed POSTs per second at ``concurrency`` from an aiohttp client."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return await _rate(post, receiver_url, requests, concurrency)


async def engine_client_limit(receiver_url: str, *, requests: int = 20_000, concurrency: int = 64) -> float:
    """Signed POSTs per second at ``concurrency`` from the engine's own client (webhooks.http_client)."""
    client = DeliveryClient(SafeResolver(allow_private=True), excerpt_limit=RESPONSE_BODY_LIMIT)
    try:

        async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
            return (await client.post(URL(url), body, headers, timeout=60)).status

        return await _rate(post, receiver_url, requests, concurrency)
    finally:
        await client.close()


async def _rate(post: Post, receiver_url: str, requests: int, concurrency: int) -> float:
    """Each request signed at send time, as the engine does."""
    signer = signer_for((generate_webhook_secret(),))
    body = json.dumps(
        {"id": new_id("evt"), "type": "calendar.sync.completed", "timestamp": "2025-01-01T00:00:00.000Z"}
        | {"data": sync_data("ws_bench")},
        separators=(",", ":"),
    ).encode()
    url = receiver_url + "/raw/0"
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            headers = build_headers(new_id("evt"), int(time.time()), body, signer, USER_AGENT)
            status = await post(url, body, headers)
            if status != 200:
                raise RuntimeError(f"receiver answered {status}")

    # A short warm-up fills the connection pool before the clock starts.
    remaining = concurrency * 4
    await asyncio.gather(*(client() for _ in range(concurrency)))
    remaining = requests
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)
