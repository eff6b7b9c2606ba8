"""HTTP endpoints of the subscriptions API (CONTRACT §4.2): authorize, read the body, call the service, answer."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from subscriptions import service
from subscriptions.catalogue import CATALOGUE
from subscriptions.schemas import CreateSubscription, RotateSecret, UpdateSubscription, subscription_out
from subscriptions.service import OnDelete, SecretView
from synchook.http.bodies import read_model
from synchook.http.guard import app_context, authorize
from synchook.http.pagination import next_cursor, page_request
from synchook.http.responses import ok, page
from synchook.outbox import hand_off
from synchook.settings import Settings
from synchook.timeutil import isoformat

READ = "read:webhooks"
WRITE = "write:webhooks"


# A secret in a response must not stay in a browser's or a proxy's cache.
NO_STORE = {"Cache-Control": "no-store"}


def _dns(settings: Settings) -> service.DNSConfig:
    return service.DNSConfig(nameservers=settings.dns_nameservers, timeout=settings.dns_timeout)


def _secret_out(view: SecretView) -> dict[str, Any]:
    return {
        "secret": view.secret.reveal(),
        "public_key": view.public_key,
        "previous_secret_expires_at": isoformat(view.previous_secret_expires_at),
        "previous_public_key": view.previous_public_key,
    }


async def list_event_types(request: Request) -> JSONResponse:
    await authorize(request, READ)
    return page([event_type.as_dict() for event_type in CATALOGUE], None)


async def create_subscription(request: Request) -> JSONResponse:
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    body = await read_model(request, CreateSubscription, max_bytes=ctx.settings.max_body_bytes)
    # Resolved before the unit of work: on SQLite it holds the write lock every other request waits for.
    url = await service.safe_url(body.url, allow_private=ctx.settings.allow_private_targets, dns=_dns(ctx.settings))
    async with ctx.db.session() as session:
        subscription, secret = await service.create_subscription(
            session,
            box=ctx.box,
            workspace_id=principal.workspace_id,
            body=body,
            allow_private=ctx.settings.allow_private_targets,
            checked_url=url,
        )
    created = {**subscription_out(subscription), **_secret_out(secret)}
    if subscription.signature_type == "ed25519":
        # A receiver verifies v1a with the public key alone; the whsk_ signing key stays behind the secret endpoint.
        del created["secret"]
    return ok(created, status=201, headers=NO_STORE)


async def list_subscriptions(request: Request) -> JSONResponse:
    principal = await authorize(request, READ)
    ctx = app_context(request)
    paging = page_request(request)
    async with ctx.db.session() as session:
        rows = await service.list_subscriptions(
            session, workspace_id=principal.workspace_id, limit=paging.limit + 1, before_id=paging.after_id
        )
    cursor = next_cursor([row.id for row in rows], paging.limit)
    return page([subscription_out(row) for row in rows[: paging.limit]], cursor)


async def get_subscription(request: Request) -> JSONResponse:
    principal = await authorize(request, READ)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        subscription = await service.get_subscription(
            session, workspace_id=principal.workspace_id, subscription_id=request.path_params["id"]
        )
    return ok(subscription_out(subscription))


async def update_subscription(request: Request) -> JSONResponse:
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    body = await read_model(request, UpdateSubscription, max_bytes=ctx.settings.max_body_bytes)
    url: str | None = None
    if "url" in body.model_fields_set:  # resolved before the unit of work, as in create_subscription
        url = await service.safe_url(
            body.url or "", allow_private=ctx.settings.allow_private_targets, dns=_dns(ctx.settings)
        )
    async with ctx.db.session() as session:
        subscription = await service.update_subscription(
            session,
            workspace_id=principal.workspace_id,
            subscription_id=request.path_params["id"],
            body=body,
            allow_private=ctx.settings.allow_private_targets,
            checked_url=url,
        )
    return ok(subscription_out(subscription))


async def delete_subscription(request: Request, *, on_delete: OnDelete) -> Response:
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        await service.delete_subscription(
            session, workspace_id=principal.workspace_id, subscription_id=request.path_params["id"], on_delete=on_delete
        )
    return Response(status_code=204)


async def get_secret(request: Request) -> JSONResponse:
    # write:webhooks, not read: a read-only key (dashboards, log shippers) never sees a signing secret.
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        view = await service.reveal_secret(
            session, box=ctx.box, workspace_id=principal.workspace_id, subscription_id=request.path_params["id"]
        )
    return ok(_secret_out(view), headers=NO_STORE)


async def rotate_secret(request: Request) -> JSONResponse:
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    body = await read_model(request, RotateSecret, max_bytes=ctx.settings.max_body_bytes, allow_empty=True)
    async with ctx.db.session() as session:
        view = await service.rotate_secret(
            session,
            box=ctx.box,
            workspace_id=principal.workspace_id,
            subscription_id=request.path_params["id"],
            expire_previous_in=body.expire_previous_in,
        )
    return ok(_secret_out(view), headers=NO_STORE)


async def send_test_event(request: Request) -> JSONResponse:
    principal = await authorize(request, WRITE)
    ctx = app_context(request)
    async with ctx.db.session() as session:
        event = await service.send_test_event(
            session, workspace_id=principal.workspace_id, subscription_id=request.path_params["id"]
        )
    await hand_off(ctx.enqueue, [event.id])
    return ok({"event_id": event.id}, status=202)


_ONE = "/webhooks/subscriptions/{id}"


def routes(*, on_delete: OnDelete) -> list[BaseRoute]:
    """The subscriptions API; ``on_delete`` is what else a deletion does (wired by the composition root)."""
    return [
        Route("/webhooks/event-types", list_event_types, methods=["GET"]),
        Route("/webhooks/subscriptions", create_subscription, methods=["POST"]),
        Route("/webhooks/subscriptions", list_subscriptions, methods=["GET"]),
        Route(_ONE, get_subscription, methods=["GET"]),
        Route(_ONE, update_subscription, methods=["PATCH"]),
        Route(_ONE, partial(delete_subscription, on_delete=on_delete), methods=["DELETE"]),
        Route(_ONE + "/secret", get_secret, methods=["GET"]),
        Route(_ONE + "/secret/rotate", rotate_secret, methods=["POST"]),
        Route(_ONE + "/test", send_test_event, methods=["POST"]),
    ]
