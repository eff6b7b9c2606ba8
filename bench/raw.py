"""The machine's raw limit: an aiohttp client posting signed payloads straight to the receiver (no queue, no DB)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from subscriptions.keys import generate_webhook_secret
from synchook.ids import new_id
from tests.factories.webhooks import sync_data
from webhooks.sender import USER_AGENT
from webhooks.signing import build_headers, signer_for


async def raw_limit(receiver_url: str, *, requests: int = 20_000, concurrency: int = 64) -> float:
    """Signed POSTs per second at ``concurrency``: each request signed at send time, as the engine does."""
    signer = signer_for((generate_webhook_secret(),))
    body = json.dumps(
        {"id": new_id("evt"), "type": "calendar.sync.completed", "timestamp": "2025-01-01T00:00:00.000Z"}
        | {"data": sync_data("ws_bench")},
        separators=(",", ":"),
    ).encode()
    url = receiver_url + "/raw/0"
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                msg_id = new_id("evt")
                headers = build_headers(msg_id, int(time.time()), body, signer, USER_AGENT)
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"receiver answered {response.status}")

        # A short warm-up fills the connection pool before the clock starts.
        remaining = concurrency * 4
        await asyncio.gather(*(client() for _ in range(concurrency)))
        remaining = requests
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed
