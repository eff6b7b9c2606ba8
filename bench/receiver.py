"""The benchmark's receiver: a separate process on loopback that records every webhook it gets.

    python -m bench.receiver            # prints "PORT <n>" once listening

Every path answers 200 at once, except paths under ``/hang/`` which sleep ``HANG_SECONDS`` first
(past the bench workers' delivery timeout). Deliveries are recorded by (path, webhook-id) with the
first arrival time; a reservoir of full requests is kept for signature checks. Control endpoints
under ``/_ctl/`` (reset, stats, dump, sample) serve the harness; they are not webhooks.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from aiohttp import web

HANG_SECONDS = 5.0
SAMPLE_SIZE = 2000


class Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        # Kept as deliveries arrive: the harness polls it every 100 ms, and counting over `first` would
        # cost the receiver time in proportion to the backlog (a fifth of a core at 200k), taken from the
        # workers on a 2-core machine.
        self.healthy = 0
        self.requests = 0
        self.sample: list[dict[str, Any]] = []
        self.seen = 0

    def record(self, path: str, headers: Any, body: bytes, at: float) -> None:
        self.requests += 1
        key = (path, headers.get("webhook-id", ""))
        if key not in self.first:
            self.first[key] = at
            if not path.startswith("/hang/"):
                self.healthy += 1
        # Reservoir sampling: a uniform sample of every request since the last reset.
        self.seen += 1
        entry = None
        if len(self.sample) < SAMPLE_SIZE:
            entry = len(self.sample)
            self.sample.append({})
        else:
            pick = random.randrange(self.seen)
            if pick < SAMPLE_SIZE:
                entry = pick
        if entry is not None:
            self.sample[entry] = {
                "path": path,
                "headers": {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")},
                "body": body.decode("utf-8", "replace"),
                "at": at,  # the receipt time: the signature's timestamp is checked against it, as a receiver would
            }


def build_app(recorder: Recorder) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        recorder.record(path, request.headers, body, time.time())
        if path.startswith("/hang/"):
            await asyncio.sleep(HANG_SECONDS)
        return web.Response(body=b"ok")

    async def reset(_request: web.Request) -> web.Response:
        recorder.reset()
        return web.json_response({"ok": True})

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": recorder.requests, "unique": len(recorder.first), "healthy": recorder.healthy}
        )

    async def dump(_request: web.Request) -> web.Response:
        rows = [[path, msg_id, at] for (path, msg_id), at in recorder.first.items()]
        return web.json_response({"rows": rows})

    async def sample(_request: web.Request) -> web.Response:
        return web.json_response({"sample": recorder.sample})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/_ctl/reset", reset)
    app.router.add_get("/_ctl/stats", stats)
    app.router.add_get("/_ctl/dump", dump)
    app.router.add_get("/_ctl/sample", sample)
    app.router.add_route("*", "/{tail:.*}", hook)
    return app


async def serve() -> None:
    runner = web.AppRunner(build_app(Recorder()), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
