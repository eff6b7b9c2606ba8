"""Operational endpoints, no API key: /healthz, /readyz (database and Redis), /metrics, /openapi.json, /docs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from synchook import docs_page, openapi
from synchook.http.guard import app_context
from synchook.root import metrics


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    ctx = app_context(request)
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
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    *metrics.ROUTES,
    *openapi.ROUTES,
    *docs_page.ROUTES,
]
