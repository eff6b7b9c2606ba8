"""Request context: a request id on every response, rate-limit headers, and the last-resort 500/503."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from synchook.db import is_connection_error
from synchook.ids import ulid

logger = logging.getLogger("synchook.http")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else f"req_{ulid()}"
        state["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                limit = state.get("rate_limit")
                if limit is not None:
                    # A refusal (429) names its own X-RateLimit-* (the limit it hit): those stand, once each.
                    present = {name.lower() for name, _ in headers}
                    headers.extend(
                        (header, str(value).encode())
                        for name, value in limit.headers().items()
                        if (header := name.lower().encode()) not in present
                    )
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if status_holder["started"]:
                raise
            if is_connection_error(exc):
                logger.warning("database unavailable request_id=%s error=%s", request_id, type(exc).__name__)
                await _send_error(send_with_headers, 503, "unavailable", "A backing service is unavailable", request_id)
            else:
                logger.exception("unhandled error request_id=%s", request_id)
                await _send_error(send_with_headers, 500, "internal_error", "Internal server error", request_id)
        finally:
            logger.info(
                "%s %s %s",
                scope.get("method"),
                scope.get("path"),
                status_holder["status"],
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status_holder["status"],
                    "request_id": request_id,
                    "workspace_id": state.get("workspace_id"),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


async def _send_error(send: Send, status: int, code: str, message: str, request_id: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
