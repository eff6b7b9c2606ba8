"""Operational endpoints, no API key, each declared once: /healthz, /readyz (database and Redis), /metrics,
/openapi.json, /docs."""

from __future__ import annotations

from typing import Literal

from starlette.responses import JSONResponse, Response

from synchook import docs_page
from synchook.http.endpoint import Call, Endpoint, Reply
from synchook.http.wire import Wire
from synchook.root import metrics

_NO_KEY = "Operational endpoint, no API key; "


class Liveness(Wire):
    status: Literal["ok"]


class Readiness(Wire):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


async def healthz(_call: Call[None, None]) -> Liveness:
    return Liveness(status="ok")


async def readyz(call: Call[None, None]) -> Reply:
    ctx = call.ctx
    checks: dict[str, str] = {}
    try:
        await ctx.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        if ctx.redis is None:
            raise ConnectionError("not configured")
        await ctx.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return Reply(Readiness(status="ok" if ready else "unavailable", checks=checks), status=200 if ready else 503)


async def serve_metrics(call: Call[None, None]) -> Response:
    return await metrics.metrics(call.request)


async def openapi_json(call: Call[None, None]) -> Response:
    # Built once per app from the declarations the composition root registered (synchook/root/app.py).
    return JSONResponse(call.request.app.state.openapi)


async def docs(call: Call[None, None]) -> Response:
    return await docs_page.docs(call.request)


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        method="GET",
        path="/healthz",
        handler=healthz,
        envelope=False,
        summary="Liveness",
        tag="operations",
        scope=None,
        response=Liveness,
        description=_NO_KEY + "answers while the process runs.",
    ),
    Endpoint(
        method="GET",
        path="/readyz",
        handler=readyz,
        envelope=False,
        summary="Readiness",
        tag="operations",
        scope=None,
        response=Readiness,
        alternatives=((503, Readiness),),
        description=_NO_KEY + "200 when the database and Redis are reachable, else 503 with the same body.",
    ),
    Endpoint(
        method="GET",
        path="/metrics",
        handler=serve_metrics,
        summary="Prometheus metrics",
        tag="operations",
        scope=None,
        media_type="text/plain",
        errors=(401,),
        description=_NO_KEY + "Prometheus text format. Expose it to your scraper only, never publicly. "
        "When SYNCHOOK_METRICS_TOKEN is set it needs `Authorization: Bearer <token>` (else 401 "
        "`invalid_key`). Figures read from the database are cached for a few seconds per process.",
    ),
    Endpoint(
        method="GET",
        path="/openapi.json",
        handler=openapi_json,
        summary="This document",
        tag="operations",
        scope=None,
        description="The OpenAPI 3.1 description of this API, generated from the route declarations; no API key.",
    ),
    Endpoint(
        method="GET",
        path="/docs",
        handler=docs,
        summary="API reference",
        tag="operations",
        scope=None,
        media_type="text/html",
        description="This document rendered as an HTML page (self-contained, works offline); no API key.",
    ),
]
