"""A recording webhook receiver on 127.0.0.1, port 0, with programmable behaviour per path.

    async with Receiver() as receiver:
        receiver.program("/flaky", statuses=[500, 200])
        url = receiver.url("/flaky")
        ...
        await receiver.wait_for(2, path="/flaky")
        receiver.requests("/flaky")[0].headers["webhook-id"]

Fast enough for the benchmark: no access log, no per-request allocation beyond the record itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDictProxy


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float  # time.time() at arrival (the headers and body fully read)


@dataclass(slots=True)
class Behaviour:
    """What a path answers: statuses in turn (the last repeats), after ``delay`` seconds."""

    statuses: Sequence[int] = (200,)
    delay: float = 0.0
    retry_after: str | None = None
    location: str | None = None  # sent with 3xx statuses
    close: bool = False  # drop the connection without answering
    body: bytes = b"ok"
    served: int = 0
    hold: asyncio.Event | None = None  # answer only once it is set (a request held as long as a test needs)

    def next_status(self) -> int:
        index = min(self.served, len(self.statuses) - 1)
        self.served += 1
        return self.statuses[index]


@dataclass
class Receiver:
    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    by_path: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    default: Behaviour = field(default_factory=Behaviour)
    port: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    # --- set-up ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def program(
        self,
        path: str,
        *,
        statuses: Sequence[int] = (200,),
        delay: float = 0.0,
        retry_after: str | None = None,
        location: str | None = None,
        close: bool = False,
        body: bytes = b"ok",
        hold: asyncio.Event | None = None,
    ) -> Behaviour:
        behaviour = Behaviour(tuple(statuses), delay, retry_after, location, close, body, hold=hold)
        self.behaviours[path] = behaviour
        return behaviour

    # --- reading ----------------------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Received]:
        return list(self.received if path is None else self.by_path.get(path, []))

    def count(self, path: str | None = None) -> int:
        return len(self.received) if path is None else len(self.by_path.get(path, []))

    async def wait_for(self, count: int, *, path: str | None = None, timeout: float = 20.0) -> list[Received]:
        """Wait until at least ``count`` requests (to ``path``, if given) have arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.count(path) >= count)
        return self.requests(path)

    # --- serving ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = Received(request.method, request.path, request.headers, body, time.time())
        self.received.append(record)
        self.by_path[request.path].append(record)
        async with self._changed:
            self._changed.notify_all()
        behaviour = self.behaviours.get(request.path, self.default)
        status = behaviour.next_status()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.hold is not None:
            await behaviour.hold.wait()
        if behaviour.close:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the connection without a response
        headers: dict[str, str] = {}
        if behaviour.retry_after is not None:
            headers["Retry-After"] = behaviour.retry_after
        if behaviour.location is not None:
            headers["Location"] = behaviour.location
        return web.Response(status=status, body=behaviour.body, headers=headers)
