"""HTTP endpoints of the subscriptions API (CONTRACT §4.2), each declared once: scope, models, errors."""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel
from starlette.responses import Response

from subscriptions import service
from subscriptions.catalogue import CATALOGUE
from subscriptions.schemas import (
    CreateSubscription,
    EventTypeView,
    RotateSecret,
    SecretView,
    SubscriptionCreated,
    SubscriptionView,
    TestEventSent,
    UpdateSubscription,
)
from subscriptions.service import OnDelete, ScopeResolver
from synchook.auth.models import Scope
from synchook.enqueue import hand_off_events
from synchook.http.endpoint import Call, Endpoint, Page, Reply
from synchook.http.pagination import PageQuery, next_cursor
from synchook.settings import Settings

# A secret in a response must not stay in a browser's or a proxy's cache.
NO_STORE = {"Cache-Control": "no-store"}


def _dns(settings: Settings) -> service.DNSConfig:
    return service.DNSConfig(nameservers=settings.dns_nameservers, timeout=settings.dns_timeout)


async def list_event_types(call: Call[None, None]) -> Page:
    return Page([EventTypeView.model_validate(event_type.as_dict()) for event_type in CATALOGUE], None)


async def create_subscription(call: Call[None, CreateSubscription], *, resolve_scope: ScopeResolver) -> Reply:
    settings = call.ctx.settings
    # Resolved before the unit of work: on SQLite it holds the write lock every other request waits for.
    url = await service.safe_url(call.body.url, allow_private=settings.allow_private_targets, dns=_dns(settings))
    async with call.ctx.db.session() as session:
        subscription, secret = await service.create_subscription(
            session,
            box=call.ctx.box,
            workspace_id=call.workspace_id,
            body=call.body,
            allow_private=settings.allow_private_targets,
            checked_url=url,
            resolve_scope=resolve_scope,
        )
    return Reply(SubscriptionCreated.of_new(subscription, secret), headers=NO_STORE)


async def list_subscriptions(call: Call[PageQuery, None]) -> Page:
    query = call.query
    async with call.ctx.db.session() as session:
        rows = await service.list_subscriptions(
            session, workspace_id=call.workspace_id, limit=query.limit + 1, before_id=query.after_id
        )
    items: list[BaseModel] = [SubscriptionView.of(row) for row in rows[: query.limit]]
    return Page(items, next_cursor([row.id for row in rows], query.limit))


async def get_subscription(call: Call[None, None]) -> SubscriptionView:
    # One SELECT: no transaction, no SQLite write lock, no ORM.
    subscription = await service.read_subscription(
        call.ctx.db, workspace_id=call.workspace_id, subscription_id=call.path["id"]
    )
    return SubscriptionView.of(subscription)


async def update_subscription(
    call: Call[None, UpdateSubscription], *, resolve_scope: ScopeResolver
) -> SubscriptionView:
    settings = call.ctx.settings
    url: str | None = None
    if "url" in call.body.model_fields_set:  # resolved before the unit of work, as in create_subscription
        url = await service.safe_url(
            call.body.url or "", allow_private=settings.allow_private_targets, dns=_dns(settings)
        )
    async with call.ctx.db.session() as session:
        subscription = await service.update_subscription(
            session,
            workspace_id=call.workspace_id,
            subscription_id=call.path["id"],
            body=call.body,
            allow_private=settings.allow_private_targets,
            checked_url=url,
            resolve_scope=resolve_scope,
        )
    return SubscriptionView.of(subscription)


async def delete_subscription(call: Call[None, None], *, on_delete: OnDelete) -> Response:
    async with call.ctx.db.session() as session:
        await service.delete_subscription(
            session, workspace_id=call.workspace_id, subscription_id=call.path["id"], on_delete=on_delete
        )
    return Response(status_code=204)


async def get_secret(call: Call[None, None]) -> Reply:
    async with call.ctx.db.session() as session:
        view = await service.reveal_secret(
            session, box=call.ctx.box, workspace_id=call.workspace_id, subscription_id=call.path["id"]
        )
    return Reply(SecretView.of(view), headers=NO_STORE)


async def rotate_secret(call: Call[None, RotateSecret]) -> Reply:
    async with call.ctx.db.session() as session:
        view = await service.rotate_secret(
            session,
            box=call.ctx.box,
            workspace_id=call.workspace_id,
            subscription_id=call.path["id"],
            expire_previous_in=call.body.expire_previous_in,
        )
    return Reply(SecretView.of(view), headers=NO_STORE)


async def send_test_event(call: Call[None, None]) -> TestEventSent:
    # One INSERT … SELECT: on PostgreSQL its own transaction (no BEGIN and COMMIT round trips).
    event_id = await service.send_test_event(
        call.ctx.db, workspace_id=call.workspace_id, subscription_id=call.path["id"]
    )
    await hand_off_events(call.ctx.redis, [event_id], pipe=call.ctx.hits)
    return TestEventSent(event_id=event_id)


_ONE = "/v1/webhooks/subscriptions/{id}"


def endpoints(*, on_delete: OnDelete, resolve_scope: ScopeResolver) -> list[Endpoint]:
    """The subscriptions API; ``on_delete`` is what else a deletion does, ``resolve_scope`` how connection and
    calendar filter ids are checked (both wired by the composition root)."""
    return [
        Endpoint(
            method="GET",
            path="/v1/webhooks/event-types",
            handler=list_event_types,
            summary="List the event-type catalogue",
            tag="webhooks",
            scope=Scope.READ_WEBHOOKS,
            response=EventTypeView,
            many=True,
            description="Each type with the JSON Schema of its webhook body.",
        ),
        Endpoint(
            method="POST",
            path="/v1/webhooks/subscriptions",
            handler=partial(create_subscription, resolve_scope=resolve_scope),
            summary="Create a subscription",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            body=CreateSubscription,
            response=SubscriptionCreated,
            status=201,
            extra_response_headers=("Cache-Control",),
            description="An HMAC subscription's `whsec_` secret appears only here and at the secret endpoint; an "
            "ed25519 subscription answers with its `public_key` alone (the `whsk_` signing key is only at the "
            "secret endpoint). 422 `invalid_url` for an invalid URL, or (unless allowed) one that is not https "
            "or resolves to a private address.",
        ),
        Endpoint(
            method="GET",
            path="/v1/webhooks/subscriptions",
            handler=list_subscriptions,
            summary="List subscriptions",
            tag="webhooks",
            scope=Scope.READ_WEBHOOKS,
            query=PageQuery,
            response=SubscriptionView,
            many=True,
        ),
        Endpoint(
            method="GET",
            path=_ONE,
            handler=get_subscription,
            summary="Get a subscription",
            tag="webhooks",
            scope=Scope.READ_WEBHOOKS,
            response=SubscriptionView,
            errors=(404,),
        ),
        Endpoint(
            method="PATCH",
            path=_ONE,
            handler=partial(update_subscription, resolve_scope=resolve_scope),
            summary="Update a subscription",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            body=UpdateSubscription,
            response=SubscriptionView,
            errors=(404,),
        ),
        Endpoint(
            method="DELETE",
            path=_ONE,
            handler=partial(delete_subscription, on_delete=on_delete),
            summary="Delete a subscription",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            status=204,
            errors=(404,),
            description="Pending deliveries are cancelled.",
        ),
        Endpoint(
            method="GET",
            path=_ONE + "/secret",
            handler=get_secret,
            summary="Get the signing secret",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            response=SecretView,
            errors=(404,),
            extra_response_headers=("Cache-Control",),
            description="Needs write:webhooks: a read-only key never sees a secret. "
            "Answered with Cache-Control: no-store.",
        ),
        Endpoint(
            method="POST",
            path=_ONE + "/secret/rotate",
            handler=rotate_secret,
            summary="Rotate the signing secret",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            body=RotateSecret,
            body_required=False,
            response=SecretView,
            errors=(404,),
            extra_response_headers=("Cache-Control",),
            description="Until expire_previous_in seconds have passed, every delivery carries both signatures. "
            "Answered with Cache-Control: no-store.",
        ),
        Endpoint(
            method="POST",
            path=_ONE + "/test",
            handler=send_test_event,
            summary="Send a test event",
            tag="webhooks",
            scope=Scope.WRITE_WEBHOOKS,
            response=TestEventSent,
            status=202,
            errors=(404,),
            description="Sends a `webhook.test` event to this subscription alone.",
        ),
    ]
