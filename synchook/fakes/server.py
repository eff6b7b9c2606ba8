"""`FakeProviders`: the state served over HTTP by uvicorn on loopback, in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from synchook.fakes import google, graph
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount, Fault, RequestRecord
from synchook.fakes.oauth import CLIENTS
from synchook.fakes.state import ProviderState

Handler = Callable[[ProviderState, Request, FakeAccount], Response]
Endpoint = Callable[[Request], Awaitable[Response]]

_UNAUTHORIZED: dict[str, Callable[[], Response]] = {GOOGLE: google.unauthorized, MICROSOFT: graph.unauthorized}
_FAULT: dict[str, Callable[[Fault], Response]] = {GOOGLE: google.fault, MICROSOFT: graph.fault}


class FakeProviders(ProviderState):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=self._routes())
        super().__init__()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeProviders:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on such sockets; without it keep-alive
        # responses stall 40 ms on delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", loop="asyncio", http="auto", ws="none", log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-providers", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake providers did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def settings_env(self) -> dict[str, str]:
        return {
            "SYNCHOOK_GOOGLE_API_URL": f"{self.base_url}/google",
            "SYNCHOOK_GOOGLE_TOKEN_URL": f"{self.base_url}/google/token",
            "SYNCHOOK_MICROSOFT_GRAPH_URL": f"{self.base_url}/graph/v1.0",
            "SYNCHOOK_MICROSOFT_TOKEN_URL": f"{self.base_url}/microsoft/token",
            "SYNCHOOK_GOOGLE_CLIENT_ID": CLIENTS[GOOGLE][0],
            "SYNCHOOK_GOOGLE_CLIENT_SECRET": CLIENTS[GOOGLE][1],
            "SYNCHOOK_MICROSOFT_CLIENT_ID": CLIENTS[MICROSOFT][0],
            "SYNCHOOK_MICROSOFT_CLIENT_SECRET": CLIENTS[MICROSOFT][1],
        }

    def endpoint_kwargs(self) -> dict[str, str]:
        """Keyword arguments for sync_trigger.connectors.ProviderEndpoints."""
        return {key.removeprefix("SYNCHOOK_").lower(): value for key, value in self.settings_env().items()}

    # ---- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/google/calendar/v3/users/me/calendarList", self._api(GOOGLE, google.calendars)),
            Route("/google/calendar/v3/calendars/{calendar_id:path}/events", self._api(GOOGLE, google.events)),
            Route("/google/token", self._token(GOOGLE), methods=["POST"]),
            Route("/graph/v1.0/me/calendars", self._api(MICROSOFT, graph.calendars)),
            Route("/graph/v1.0/me/calendars/{calendar_id:path}/calendarView/delta", self._api(MICROSOFT, graph.delta)),
            Route("/microsoft/token", self._token(MICROSOFT), methods=["POST"]),
        ]

    def _api(self, provider: str, handler: Handler) -> Endpoint:
        """An API endpoint: bearer-token check, queued faults, latency, in-flight counts, the request log."""

        async def endpoint(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            record = self._record(provider, request, dict(request.query_params))
            with self._lock:
                owner = self.tokens.access.get(token)
                key = (provider, owner[1]) if owner and owner[0] == provider else None
                if key:
                    record.account = key[1]
                    self._in_flight[key] += 1
                    self._max_in_flight[key] = max(self._max_in_flight[key], self._in_flight[key])
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                with self._lock:
                    if key is None or owner is None or owner[2] < time.time():
                        response = _UNAUTHORIZED[provider]()
                    elif self._faults[provider]:
                        response = _FAULT[provider](self._faults[provider].popleft())
                    else:
                        response = handler(self, request, self._accounts[key])
            finally:
                if key:
                    with self._lock:
                        self._in_flight[key] -= 1
            record.status = response.status_code
            return response

        return endpoint

    def _token(self, provider: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            record = self._record(provider, request, {})
            with self._lock:
                response = self.tokens.grant(provider, form, self._accounts, self.access_ttl)
            record.status = response.status_code
            return response

        return endpoint

    def _record(self, provider: str, request: Request, query: dict[str, str]) -> RequestRecord:
        headers = {k: v for k, v in request.headers.items() if k in ("prefer", "content-type")}
        record = RequestRecord(provider, request.method, request.url.path, query, headers)
        with self._lock:
            self._requests.append(record)
        return record
