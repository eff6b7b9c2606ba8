"""`FakeProviders`: the state served over HTTP by uvicorn on loopback, in a background thread."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, cast
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from synchook.fakes import google, graph
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount, Fault, RequestRecord
from synchook.fakes.oauth import CLIENTS
from synchook.fakes.state import ProviderState

Handler = Callable[[ProviderState, Request, FakeAccount], Response]
AsyncHandler = Callable[[ProviderState, Request, FakeAccount], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

_CTL = "/_ctl/{provider:str}/calendars/{calendar_id:str}/events"
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
        self.push.sender.close()

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
        subscription = "/graph/v1.0/subscriptions/{subscription_id}"
        return [
            Route("/google/calendar/v3/users/me/calendarList", self._api(GOOGLE, google.calendars)),
            Route("/google/calendar/v3/calendars/{calendar_id:path}/events", self._api(GOOGLE, google.events)),
            Route(
                "/google/calendar/v3/calendars/{calendar_id:path}/events/watch",
                self._api(GOOGLE, google.watch, body=True),
                methods=["POST"],
            ),
            Route(
                "/google/calendar/v3/channels/stop", self._api(GOOGLE, google.stop_channel, body=True), methods=["POST"]
            ),
            Route("/google/token", self._token(GOOGLE), methods=["POST"]),
            Route("/graph/v1.0/me/calendars", self._api(MICROSOFT, graph.calendars)),
            Route("/graph/v1.0/me/calendars/{calendar_id:path}/calendarView/delta", self._api(MICROSOFT, graph.delta)),
            Route(
                "/graph/v1.0/subscriptions",
                self._api(MICROSOFT, graph.create_subscription, body=True),
                methods=["POST"],
            ),
            Route(subscription, self._api(MICROSOFT, graph.get_subscription), methods=["GET"]),
            Route(subscription, self._api(MICROSOFT, graph.update_subscription, body=True), methods=["PATCH"]),
            Route(subscription, self._api(MICROSOFT, graph.delete_subscription), methods=["DELETE"]),
            Route(
                f"{subscription}/reauthorize", self._api(MICROSOFT, graph.reauthorize_subscription), methods=["POST"]
            ),
            Route("/microsoft/token", self._token(MICROSOFT), methods=["POST"]),
            # Control calls (no auth, loopback): what a user does in the provider's own UI.
            Route(f"{_CTL}", self._ctl_create, methods=["POST"]),
            Route(f"{_CTL}/{{event_id}}", self._ctl_edit, methods=["POST"]),
            Route(f"{_CTL}/{{event_id}}", self._ctl_delete, methods=["DELETE"]),
            Route(f"{_CTL}/{{event_id}}/attendees/{{email}}", self._ctl_respond, methods=["POST"]),
            # Push control: what the providers do on their own (lifecycle events, lost or late messages).
            Route("/_ctl/push", self._ctl_push, methods=["GET", "POST"]),
            Route("/_ctl/push/channels", self._ctl_push_channels, methods=["GET"]),
            Route("/_ctl/push/deliveries", self._ctl_push_deliveries, methods=["GET"]),
            Route("/_ctl/google/channels/{channel_id:path}/expire", self._ctl_expire(GOOGLE), methods=["POST"]),
            Route("/_ctl/google/channels/{channel_id:path}/notify", self._ctl_google_notify, methods=["POST"]),
            Route("/_ctl/microsoft/subscriptions/{channel_id}/expire", self._ctl_expire(MICROSOFT), methods=["POST"]),
            Route("/_ctl/microsoft/subscriptions/{channel_id}/lifecycle", self._ctl_lifecycle, methods=["POST"]),
        ]

    # ---- push control calls -----------------------------------------------------------------

    async def _ctl_push(self, request: Request) -> Response:
        """`{"drop": bool, "duplicate": bool}` (either or both) sets the switches; answers them."""
        if request.method == "POST":
            payload = _json_object(await request.body())
            if payload is None or any(not isinstance(payload.get(k, False), bool) for k in ("drop", "duplicate")):
                return JSONResponse({"error": 'want {"drop": bool, "duplicate": bool}'}, 400)
            if "drop" in payload:
                self.drop_notifications(payload["drop"])
            if "duplicate" in payload:
                self.duplicate_notifications(payload["duplicate"])
        return JSONResponse({"drop": self.push.drop, "duplicate": self.push.duplicate})

    async def _ctl_push_channels(self, request: Request) -> Response:
        """`?provider=google|microsoft&calendar_id=…&all=1` (all: stopped, removed and expired ones too)."""
        query = request.query_params
        channels = self.push_channels(
            query.get("provider"), calendar_id=query.get("calendar_id"), include_ended=query.get("all") in ("1", "true")
        )
        return JSONResponse({"channels": [c.describe() for c in channels]})

    async def _ctl_push_deliveries(self, request: Request) -> Response:
        found = self.push_deliveries(request.query_params.get("provider"), request.query_params.get("kind"))
        return JSONResponse({"deliveries": [d.describe() for d in found]})

    def _ctl_expire(self, provider: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                self.expire_push_channel(provider, request.path_params["channel_id"])
            except KeyError:
                return JSONResponse({"error": "no such channel"}, 404)
            return Response(status_code=204)

        return endpoint

    async def _ctl_google_notify(self, request: Request) -> Response:
        """`{"state": "exists"|"not_exists"|"sync"}`: a message without a change."""
        payload = _json_object(await request.body()) or {}
        return self._push_command(
            lambda: self.send_google_message(request.path_params["channel_id"], payload.get("state", "exists"))
        )

    async def _ctl_lifecycle(self, request: Request) -> Response:
        """`{"event": "reauthorizationRequired"|"subscriptionRemoved"|"missed"}`."""
        payload = _json_object(await request.body()) or {}
        return self._push_command(
            lambda: self.send_lifecycle(request.path_params["channel_id"], payload.get("event", ""))
        )

    @staticmethod
    def _push_command(command: Callable[[], None]) -> Response:
        try:
            command()
        except KeyError:
            return JSONResponse({"error": "no such live channel"}, 404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response(status_code=202)

    # ---- control calls --------------------------------------------------------------------

    async def _ctl_create(self, request: Request) -> Response:
        """Create: `{"summary", "start", "end"}` (ISO datetimes, or dates for all-day) plus put_event's details."""
        return await self._control(request, self._create)

    async def _ctl_edit(self, request: Request) -> Response:
        """Edit: a JSON object of provider fields, e.g. `{"summary": "New"}` / `{"subject": "New"}`."""
        return await self._control(request, self._edit)

    async def _ctl_delete(self, request: Request) -> Response:
        return await self._control(request, self._delete)

    async def _ctl_respond(self, request: Request) -> Response:
        """An attendee answers: `{"response": "accepted"|"declined"|"tentative"|"needs_action"}`."""
        return await self._control(request, self._respond)

    async def _control(self, request: Request, action: Callable[[str, str, str, Request, Any], Response]) -> Response:
        provider, calendar_id = request.path_params["provider"], request.path_params["calendar_id"]
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, 400)
        if not isinstance(payload, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        with self._lock:
            owners = [
                acc.account
                for (prov, _), acc in self._accounts.items()
                if prov == provider and calendar_id in acc.calendars
                and request.query_params.get("account", acc.account) == acc.account
            ]  # fmt: skip
            if len(owners) != 1:
                problem = "no such calendar" if not owners else "several accounts have it: add ?account="
                return JSONResponse({"error": problem}, 404 if not owners else 400)
            try:
                return action(provider, owners[0], calendar_id, request, payload)
            except KeyError as exc:
                return JSONResponse({"error": f"not found: {exc.args[0]}"}, 404)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, 400)

    def _create(self, provider: str, account: str, calendar_id: str, request: Request, payload: Any) -> Response:
        for key in ("start", "end", "original_start"):
            if isinstance(payload.get(key), str):
                text = payload[key]
                payload[key] = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        if isinstance(payload.get("organizer"), list | dict):
            org = payload["organizer"]
            payload["organizer"] = (org["email"], org.get("name")) if isinstance(org, dict) else tuple(org)
        event_id = self.put_event(provider, account, calendar_id, payload.pop("id", None), **payload)
        return self._rendered(provider, account, calendar_id, event_id, 201)

    def _edit(self, provider: str, account: str, calendar_id: str, request: Request, payload: Any) -> Response:
        event_id = request.path_params["event_id"]
        self.edit_event(provider, account, calendar_id, event_id, payload)
        return self._rendered(provider, account, calendar_id, event_id, 200)

    def _delete(self, provider: str, account: str, calendar_id: str, request: Request, payload: Any) -> Response:
        event_id = request.path_params["event_id"]
        if self._accounts[(provider, account)].calendars[calendar_id].events[event_id].deleted:
            raise KeyError(event_id)
        self.delete_event(provider, account, calendar_id, event_id)
        return Response(status_code=204)

    def _respond(self, provider: str, account: str, calendar_id: str, request: Request, payload: Any) -> Response:
        event_id = request.path_params["event_id"]
        response = payload.get("response")
        if not isinstance(response, str):
            raise ValueError("response is required")
        self.set_attendee_response(provider, account, calendar_id, event_id, request.path_params["email"], response)
        return self._rendered(provider, account, calendar_id, event_id, 200)

    def _rendered(self, provider: str, account: str, calendar_id: str, event_id: str, status: int) -> Response:
        event = self._accounts[(provider, account)].calendars[calendar_id].events[event_id]
        item = google.render(event) if provider == GOOGLE else graph.render(event)
        return JSONResponse(item, status)

    def _api(self, provider: str, handler: Handler | AsyncHandler, *, body: bool = False) -> Endpoint:
        """An API endpoint: bearer-token check, queued faults, latency, in-flight counts, the request log.

        `body`: the JSON object body is read first, into `request.state.body` (None if it is not one).
        A sync handler runs under the state lock; an async one (Graph's subscription create, which waits
        on its handshake) runs outside it and takes the lock itself for what it touches.
        """
        is_async = inspect.iscoroutinefunction(handler)

        async def endpoint(request: Request) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            record = self._record(provider, request, dict(request.query_params))
            if body:
                request.state.body = _json_object(await request.body())
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
                response: Response | None = None
                with self._lock:
                    if key is None or owner is None or owner[2] < time.time():
                        response = _UNAUTHORIZED[provider]()
                    elif self._faults[provider]:
                        response = _FAULT[provider](self._faults[provider].popleft())
                    elif not is_async:
                        response = cast(Handler, handler)(self, request, self._accounts[key])
                    account = self._accounts[key] if key else None
                if response is None and account is not None:
                    response = await cast(AsyncHandler, handler)(self, request, account)
                assert response is not None
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


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
