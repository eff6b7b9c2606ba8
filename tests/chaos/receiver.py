"""A receiver whose behaviour per path is switched while the run goes on, recording what it answered.

Modes: ``ok`` (200), ``slow`` (200 after ``slow_delay``), ``hang`` (answers only after the sender's
timeout: recorded as ``hang``, never as a success), ``reset`` (drops the connection), ``5xx`` (500).
A delivery counts as received only when this receiver answered it 2xx in time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class ChaosReceiver:
    hang_for: float = 4.0
    slow_delay: float = 0.2
    modes: dict[str, str] = field(default_factory=dict)
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # path, webhook-id, outcome
    times: list[float] = field(default_factory=list)  # time.monotonic() of each outcome
    port: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ChaosReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _record(self, path: str, webhook_id: str, outcome: str) -> None:
        self.outcomes.append((path, webhook_id, outcome))
        self.times.append(time.monotonic())

    def timeline(self, since: float, *, step: float = 3.0) -> str:
        """Outcomes per ``step`` seconds since ``since``, per path: a compact picture of the run."""
        buckets: dict[int, Counter[str]] = {}
        for (path, _, outcome), at in zip(self.outcomes, self.times, strict=True):
            buckets.setdefault(int((at - since) // step), Counter())[f"{path}:{outcome}"] += 1
        return "\n".join(f"  t+{k * step:>5.0f}s {dict(sorted(v.items()))}" for k, v in sorted(buckets.items()))

    def duplicate_timeline(self, since: float, *, step: float = 3.0) -> dict[float, int]:
        """When the second (third, …) 2xx of a delivery arrived, per ``step`` seconds since ``since``."""
        seen: set[tuple[str, str]] = set()
        buckets: Counter[float] = Counter()
        for (path, webhook_id, outcome), at in zip(self.outcomes, self.times, strict=True):
            if outcome != "200":
                continue
            if (path, webhook_id) in seen:
                buckets[((at - since) // step) * step] += 1
            seen.add((path, webhook_id))
        return dict(sorted(buckets.items()))

    def duplicated_first_successes(self) -> list[float]:
        """For each delivery answered 2xx more than once, when it was first answered 2xx."""
        first: dict[tuple[str, str], float] = {}
        repeated: set[tuple[str, str]] = set()
        for (path, webhook_id, outcome), at in zip(self.outcomes, self.times, strict=True):
            if outcome != "200":
                continue
            key = (path, webhook_id)
            if key in first:
                repeated.add(key)
            else:
                first[key] = at
        return [first[key] for key in repeated]

    def set(self, path: str, mode: str) -> None:
        assert mode in {"ok", "slow", "hang", "reset", "5xx"}, mode
        self.modes[path] = mode

    # --- reading -------------------------------------------------------------------------------------

    def successes(self) -> Counter[tuple[str, str]]:
        """(path, webhook-id) -> how many times it was answered 2xx."""
        return Counter((path, wid) for path, wid, outcome in self.outcomes if outcome == "200")

    def count(self, outcome: str | None = None) -> int:
        return sum(1 for *_, o in self.outcomes if outcome is None or o == outcome)

    # --- serving -------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        path, webhook_id = request.path, request.headers.get("webhook-id", "")
        mode = self.modes.get(path, "ok")
        if mode == "reset":
            self._record(path, webhook_id, "reset")
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if mode == "hang":
            self._record(path, webhook_id, "hang")
            await asyncio.sleep(self.hang_for)
            return web.Response(status=200, text="too late")
        if mode == "5xx":
            self._record(path, webhook_id, "500")
            return web.Response(status=500, text="down for a while")
        if mode == "slow":
            await asyncio.sleep(self.slow_delay)
        self._record(path, webhook_id, "200")
        return web.Response(status=200, text="ok")
