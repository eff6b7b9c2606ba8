"""JSON request logs: one line per request with its context, and never a key, secret or bearer token."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from synchook.context import AppContext
from synchook.http.guard import authorize
from synchook.logs import JsonFormatter
from synchook.root.app import create_app
from synchook.settings import Settings
from tests.conftest import serve
from tests.factories import make_tenant

SECRET_MARKERS = ("wbk_", "whsec_", "whsk_", "Bearer ")
NOISY = ("uvicorn.access", "aiosqlite", "sqlalchemy.engine", "arq.worker", "arq.jobs")


@pytest.fixture
def captured() -> Iterator[Callable[[], list[str]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    # The levels synchook.logs.configure sets in production (INFO; driver loggers at WARNING), without
    # replacing pytest's own handlers. At DEBUG, aiosqlite echoes SQL parameters: never run production there.
    levels = {"": logging.INFO, **dict.fromkeys(NOISY, logging.WARNING)}
    previous = {name: logging.getLogger(name or None).level for name in levels}
    root = logging.getLogger()
    root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        yield lambda: [line for line in stream.getvalue().splitlines() if line.strip()]
    finally:
        root.removeHandler(handler)
        for name, level in previous.items():
            logging.getLogger(name or None).setLevel(level)


async def probe(request: Request) -> JSONResponse:
    principal = await authorize(request, "read:webhooks")
    return JSONResponse({"data": {"workspace_id": principal.workspace_id}})


@pytest.fixture
async def logged_client(settings: Settings, app_ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, context=app_ctx)
    # An authenticated endpoint of the kernel's own, so the test does not depend on a domain's routes.
    app.router.routes.insert(0, Route("/v1/_log_probe", probe, methods=["GET"]))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


def request_records(lines: list[str]) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines]
    return [r for r in records if r.get("logger") == "synchook.http" and "duration_ms" in r]


async def test_one_json_line_per_request_and_no_secrets(
    logged_client: httpx.AsyncClient, app_ctx: AppContext, captured: Callable[[], list[str]]
) -> None:
    tenant = await make_tenant(app_ctx)
    wrong_key = tenant.key[:-4] + ("AAAA" if not tenant.key.endswith("AAAA") else "BBBB")
    calls: list[tuple[str, str, dict[str, str], Any, str | None]] = [
        ("GET", "/healthz", {}, None, None),
        ("GET", "/v1/_log_probe", {"Authorization": f"Bearer {wrong_key}"}, None, None),
        ("GET", "/v1/_log_probe", {"Authorization": "Bearer not-even-a-key"}, None, None),
        ("GET", "/v1/_log_probe", tenant.headers, None, tenant.workspace_id),
        (
            "POST",
            "/v1/webhooks/subscriptions",
            tenant.headers,
            {"url": "https://example.com/hook", "event_types": ["*"]},
            tenant.workspace_id,
        ),
    ]
    answered: dict[str, tuple[str, str, int, str | None]] = {}
    secrets = {tenant.key, wrong_key}
    for number, (method, path, headers, body, workspace_id) in enumerate(calls):
        request_id = f"log-test-{number}"
        response = await logged_client.request(method, path, headers={**headers, "X-Request-ID": request_id}, json=body)
        answered[request_id] = (method, path, response.status_code, workspace_id)
        if response.status_code == 201:
            secrets.add(response.json()["data"]["secret"])
    assert answered["log-test-1"][2] == answered["log-test-2"][2] == 401
    assert answered["log-test-3"][2] == 200

    log_lines = captured()
    assert log_lines, "nothing was logged"
    for line in log_lines:
        for marker in SECRET_MARKERS:
            assert marker not in line, f"{marker!r} in a log line: {line[:300]}"
        for secret in secrets:
            assert secret not in line

    records = [r for r in request_records(log_lines) if str(r.get("request_id", "")).startswith("log-test-")]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
    assert sorted(by_id) == sorted(answered)
    for request_id, (method, path, status, workspace_id) in answered.items():
        [record] = by_id[request_id]  # exactly one line per request
        assert record["method"] == method
        assert record["path"] == path
        assert record["status"] == status
        assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0
        if workspace_id is not None and status < 400:
            assert record["workspace_id"] == workspace_id
