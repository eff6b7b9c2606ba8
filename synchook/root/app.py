"""The HTTP application: kernel middleware and error mapping, plus every domain's routes (composition root)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount

import subscriptions.routes
import sync_trigger.push.routes
import sync_trigger.routes
import webhooks.routes
from sync_trigger.calendar_index.service import resolve_scope_ids
from synchook.context import AppContext
from synchook.errors import DomainError
from synchook.http.endpoint import Endpoint, routes
from synchook.http.middleware import RequestContextMiddleware, request_id_of
from synchook.http.responses import error_response
from synchook.metrics import MetricsMiddleware
from synchook.openapi import build_spec
from synchook.root import health
from synchook.settings import Settings
from webhooks.delivery.rows import cancel_open_deliveries

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}


def api_endpoints() -> list[Endpoint]:
    """Every declared /v1 endpoint: what the app routes and what /openapi.json documents."""
    # A deleted subscription's open deliveries are cancelled in the deletion's unit of work.
    # Connection and calendar filter ids are checked against the calendar index of the workspace.
    subscription_endpoints = subscriptions.routes.endpoints(
        on_delete=cancel_open_deliveries, resolve_scope=resolve_scope_ids
    )
    return [
        *sync_trigger.routes.ENDPOINTS,
        *sync_trigger.push.routes.ENDPOINTS,
        *subscription_endpoints,
        *webhooks.routes.ENDPOINTS,
    ]


def page_endpoints() -> list[Endpoint]:
    """Every declared endpoint outside /v1: health, metrics, this document, the docs and console pages."""
    return [*health.ENDPOINTS, *webhooks.routes.PAGES]


def openapi_document(*, root_path: str = "") -> dict[str, Any]:
    """`/openapi.json`: generated from the declarations of every endpoint."""
    return build_spec([*page_endpoints(), *api_endpoints()], root_path=root_path)


def api_routes() -> list[BaseRoute]:
    return routes(api_endpoints(), mount="/v1")


def all_routes() -> list[BaseRoute]:
    return [*routes(page_endpoints()), Mount("/v1", routes=api_routes())]


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return error_response(
        exc.status, exc.code, exc.message, request_id_of(request.scope), field=exc.field, headers=exc.headers
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = "Not found" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, code, message, request_id_of(request.scope), headers=dict(exc.headers or {}))


def create_app(settings: Settings, *, context: AppContext | None = None) -> Starlette:
    """Build the app; tests pass a ready context, production opens one in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = context or await AppContext.open(settings)
        app.state.ctx = ctx
        try:
            yield
        finally:
            if context is None:
                await ctx.close()

    routes: list[BaseRoute] = all_routes()
    if settings.root_path:
        # Mounted under the prefix (not ASGI root_path) so the seed's full URL works behind no proxy.
        routes = [Mount(settings.root_path, routes=routes), *routes]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware), Middleware(RequestContextMiddleware)],
        exception_handlers={DomainError: _domain_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.openapi = openapi_document(root_path=settings.root_path)
    if context is not None:
        app.state.ctx = context
    return app
