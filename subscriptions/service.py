"""Subscriptions: create, read, change and delete integrators' endpoints; their secrets; test events.

Every query takes the workspace id. Secrets are sealed under the SecretBox with the subscription id as
context, leave this module only as ``Revealed`` values, and are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from subscriptions.catalogue import ANY_EVENT, webhook_test_data
from subscriptions.errors import InvalidURL, SubscriptionNotFound
from subscriptions.keys import generate_ed25519_keypair, generate_webhook_secret, public_key_for
from subscriptions.models import ANY, SignatureType, Subscription, SubscriptionFilter, SubscriptionStatus
from subscriptions.schemas import CreateSubscription, UpdateSubscription
from synchook.crypto import Revealed, SecretBox
from synchook.db import Database, among
from synchook.errors import ValidationFailed
from synchook.ids import looks_like_id, new_id
from synchook.outbox import Event
from synchook.reseal import ResealCount, reseal_columns
from synchook.timeutil import utcnow
from synchook.url_safety import UnsafeURL, check_resolves_public

logger = logging.getLogger(__name__)

ID_PREFIX = "sub"
DELETED_REASON = "subscription deleted"
DISABLED_BY_USER = "disabled via the API"

_subscriptions = Subscription.__table__  # type: ignore[attr-defined]


class ScopeResolver(Protocol):
    """The provider of each of these connection (conn_…) and calendar (cal_…) ids that the workspace has; the
    composition root passes the calendar side's lookup (this package does not know calendars)."""

    async def __call__(
        self, session: AsyncSession, *, workspace_id: str, connection_ids: Sequence[str], calendar_ids: Sequence[str]
    ) -> dict[str, str]: ...


class OnDelete(Protocol):
    """What else a deletion does, in its unit of work (the composition root passes the delivery side's
    cancelling of open deliveries: this package does not know deliveries); returns how many it cancelled."""

    async def __call__(
        self, session: AsyncSession, *, workspace_id: str, subscription_id: str, reason: str, now: datetime
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """Which nameservers (empty: the system's) resolve webhook hosts, and how long one name may take."""

    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0


_SYSTEM_DNS = DNSConfig()


@dataclass(frozen=True, slots=True)
class RevealedSecret:
    """What the secret endpoints show: the current secret (whsec_, or whsk_ for ed25519) and overlap details."""

    secret: Revealed
    public_key: str | None
    previous_secret_expires_at: datetime | None
    previous_public_key: str | None


async def safe_url(url: str, *, allow_private: bool, dns: DNSConfig = _SYSTEM_DNS) -> str:
    """The normalized URL if Synchook may call it; InvalidURL (422 invalid_url) saying why otherwise."""
    try:
        return await check_resolves_public(
            url, allow_private=allow_private, nameservers=dns.nameservers, timeout=dns.timeout
        )
    except UnsafeURL as exc:
        raise InvalidURL(exc.reason) from None


async def create_subscription(
    session: AsyncSession,
    *,
    box: SecretBox,
    workspace_id: str,
    body: CreateSubscription,
    allow_private: bool,
    dns: DNSConfig = _SYSTEM_DNS,
    checked_url: str | None = None,
    resolve_scope: ScopeResolver | None = None,
) -> tuple[Subscription, RevealedSecret]:
    """Create a subscription with a fresh secret (or Ed25519 key pair) and its filter rows.

    ``checked_url``: ``body.url`` as :func:`safe_url` returned it, for callers that resolve it before opening
    ``session`` (a SQLite unit of work holds the write lock: no DNS lookup may wait inside one).
    """
    url = checked_url or await safe_url(body.url, allow_private=allow_private, dns=dns)
    subscription_id = new_id(ID_PREFIX)
    public_key: str | None = None
    if body.signature_type == SignatureType.ED25519:
        secret, public_key = generate_ed25519_keypair()
    else:
        secret = generate_webhook_secret()
    now = utcnow()
    subscription = Subscription(
        id=subscription_id,
        workspace_id=workspace_id,
        url=url,
        description=body.description,
        event_types=body.event_types,
        providers=list(body.providers) if body.providers is not None else None,
        connection_ids=body.connection_ids,
        calendar_ids=body.calendar_ids,
        status=SubscriptionStatus.ENABLED,
        signature_type=body.signature_type,
        secret_sealed=box.seal(secret, context=subscription_id),
        public_key=public_key,
        rate_limit_per_second=body.rate_limit_per_second,
        created_at=now,
        updated_at=now,
    )
    await _check_scope(session, subscription, resolve_scope)
    session.add(subscription)
    await session.flush()
    await _write_filters(session, subscription)
    logger.info("subscription %s created in workspace %s", subscription_id, workspace_id)
    return subscription, RevealedSecret(Revealed(secret), public_key, None, None)


async def list_subscriptions(
    session: AsyncSession, *, workspace_id: str, limit: int, before_id: str | None = None
) -> list[Subscription]:
    """Live subscriptions, newest first; up to ``limit`` rows older than ``before_id``."""
    query = sa.select(Subscription).where(
        col(Subscription.workspace_id) == workspace_id, col(Subscription.deleted_at).is_(None)
    )
    if before_id is not None:
        query = query.where(col(Subscription.id) < before_id)
    rows = await session.execute(query.order_by(col(Subscription.id).desc()).limit(limit))
    return list(rows.scalars())


async def get_subscription(session: AsyncSession, *, workspace_id: str, subscription_id: str) -> Subscription:
    """A live subscription of the workspace; SubscriptionNotFound for anything else."""
    if not looks_like_id(subscription_id, ID_PREFIX):
        raise SubscriptionNotFound()
    rows = await session.execute(_ONE_SUBSCRIPTION, {"subscription_id": subscription_id, "workspace_id": workspace_id})
    subscription = rows.scalars().first()
    if subscription is None:
        raise SubscriptionNotFound()
    return subscription


_events = Event.__table__  # type: ignore[attr-defined]

# Built once: composing the statements cost more CPU per request than running them.
_INSERT_TEST_EVENT = sa.insert(_events).from_select(
    ["id", "workspace_id", "type", "target_subscription_id", "data", "created_at"],
    sa.select(
        sa.bindparam("event_id", type_=_events.c.id.type),
        col(Subscription.workspace_id),
        sa.literal("webhook.test", type_=_events.c.type.type),
        col(Subscription.id),
        sa.bindparam("data", type_=_events.c.data.type),
        sa.bindparam("created_at", type_=_events.c.created_at.type),
    ).where(
        col(Subscription.id) == sa.bindparam("subscription_id"),
        col(Subscription.workspace_id) == sa.bindparam("workspace_id"),
        col(Subscription.deleted_at).is_(None),
    ),
)
_ONE_SUBSCRIPTION = sa.select(Subscription).where(
    col(Subscription.id) == sa.bindparam("subscription_id"),
    col(Subscription.workspace_id) == sa.bindparam("workspace_id"),
    col(Subscription.deleted_at).is_(None),
)


async def read_subscription(db: Database, *, workspace_id: str, subscription_id: str) -> sa.Row[Any]:
    """A live subscription of the workspace as a row of what SubscriptionView shows (no secret column, no ORM
    object), read outside any transaction (``Database.first_row``); SubscriptionNotFound for anything else."""
    if not looks_like_id(subscription_id, ID_PREFIX):
        raise SubscriptionNotFound()
    row = await db.first_row(_ONE_VIEW_ROW, {"subscription_id": subscription_id, "workspace_id": workspace_id})
    if row is None:
        raise SubscriptionNotFound()
    return row


_subscriptions = Subscription.__table__  # type: ignore[attr-defined]
# What the API shows of a subscription (subscriptions.schemas.SubscriptionView.fields_of).
_VIEW_COLUMNS = (
    "id",
    "url",
    "event_types",
    "providers",
    "connection_ids",
    "calendar_ids",
    "description",
    "status",
    "disabled_reason",
    "signature_type",
    "public_key",
    "rate_limit_per_second",
    "created_at",
    "updated_at",
)
_ONE_VIEW_ROW = sa.select(*(_subscriptions.c[name] for name in _VIEW_COLUMNS)).where(
    _subscriptions.c.id == sa.bindparam("subscription_id"),
    _subscriptions.c.workspace_id == sa.bindparam("workspace_id"),
    _subscriptions.c.deleted_at.is_(None),
)


async def update_subscription(
    session: AsyncSession,
    *,
    workspace_id: str,
    subscription_id: str,
    body: UpdateSubscription,
    allow_private: bool,
    dns: DNSConfig = _SYSTEM_DNS,
    checked_url: str | None = None,
    resolve_scope: ScopeResolver | None = None,
) -> Subscription:
    """Apply the fields the caller sent; a new URL is checked again and new filters replace the old.

    ``checked_url`` as in :func:`create_subscription`.
    """
    changes = body.changes()
    if "url" in changes:
        # Before the first query: a DNS lookup must not hold a write transaction open.
        changes["url"] = checked_url or await safe_url(changes["url"], allow_private=allow_private, dns=dns)
    subscription = await get_subscription(session, workspace_id=workspace_id, subscription_id=subscription_id)
    status = changes.pop("status", None)
    if status == SubscriptionStatus.ENABLED and subscription.status != SubscriptionStatus.ENABLED:
        subscription.status = SubscriptionStatus.ENABLED
        subscription.disabled_reason = None
        subscription.failing_since = None  # a fresh start: old failures must not disable it again at once
    elif status == SubscriptionStatus.DISABLED and subscription.status != SubscriptionStatus.DISABLED:
        subscription.status = SubscriptionStatus.DISABLED
        subscription.disabled_reason = DISABLED_BY_USER
    for name, value in changes.items():
        setattr(subscription, name, value)
    subscription.updated_at = utcnow()
    if "connection_ids" in changes or "calendar_ids" in changes:
        await _check_scope(session, subscription, resolve_scope)
    if "event_types" in changes or "providers" in changes:
        await _write_filters(session, subscription)
    await session.flush()
    logger.info("subscription %s updated (%s)", subscription_id, ", ".join(sorted(body.model_fields_set)) or "nothing")
    return subscription


async def delete_subscription(
    session: AsyncSession, *, workspace_id: str, subscription_id: str, on_delete: OnDelete
) -> int:
    """Soft-delete: keep the row (deliveries refer to it), drop its filters, cancel its open deliveries."""
    subscription = await get_subscription(session, workspace_id=workspace_id, subscription_id=subscription_id)
    now = utcnow()
    subscription.deleted_at = now
    subscription.updated_at = now
    await session.flush()
    await _delete_filters(session, subscription_id)
    cancelled = await on_delete(
        session, workspace_id=workspace_id, subscription_id=subscription_id, reason=DELETED_REASON, now=now
    )
    logger.info("subscription %s deleted; %d open deliveries cancelled", subscription_id, cancelled)
    return cancelled


async def disable_subscription(
    session: AsyncSession, *, workspace_id: str, subscription_id: str, reason: str, now: datetime
) -> bool:
    """Disable an enabled subscription with ``reason``; False if it was not enabled (another worker was first)."""
    result = await session.execute(
        sa.update(_subscriptions)
        .where(
            _subscriptions.c.workspace_id == workspace_id,
            _subscriptions.c.id == subscription_id,
            _subscriptions.c.status == SubscriptionStatus.ENABLED,
        )
        .values(status=SubscriptionStatus.DISABLED, disabled_reason=reason, updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


def endpoints_alive(ids: Collection[str] | sa.Select[Any]) -> sa.Update:
    """These subscriptions proved alive (a success): their failing streak ends. The ids, or a select of them for a
    caller that runs this as part of a larger statement (webhooks.delivery.record writes a flush of successes in
    one). The WHERE avoids rewriting healthy rows."""
    s = _subscriptions.c
    which = s.id.in_(ids) if isinstance(ids, sa.Select) else among(s.id, sorted(ids))
    return sa.update(_subscriptions).where(which, s.failing_since.is_not(None)).values(failing_since=None)


async def record_endpoint_health(
    session: AsyncSession, *, succeeded: Collection[str], failed: Collection[str], now: datetime
) -> None:
    """A batch's attempts per subscription: any success proves the endpoint alive, failures alone start
    (or continue) its failing streak. Across workspaces, by subscription id: the delivery side's batches are."""
    s = _subscriptions.c
    if succeeded:
        await session.execute(endpoints_alive(succeeded))
    only_failed = sorted(set(failed) - set(succeeded))
    if only_failed:
        await session.execute(
            sa.update(_subscriptions)
            .where(among(s.id, only_failed), s.failing_since.is_(None))
            .values(failing_since=now)
        )


async def reveal_secret(
    session: AsyncSession, *, box: SecretBox, workspace_id: str, subscription_id: str
) -> RevealedSecret:
    """The subscription's current secret, and when the previous one stops being used (if it still is)."""
    subscription = await get_subscription(session, workspace_id=workspace_id, subscription_id=subscription_id)
    return _secret_view(subscription, box, now=utcnow())


async def rotate_secret(
    session: AsyncSession,
    *,
    box: SecretBox,
    workspace_id: str,
    subscription_id: str,
    expire_previous_in: int,
) -> RevealedSecret:
    """Replace the secret; the old one keeps signing for ``expire_previous_in`` seconds (0: not at all)."""
    subscription = await get_subscription(session, workspace_id=workspace_id, subscription_id=subscription_id)
    now = utcnow()
    if subscription.signature_type == SignatureType.ED25519:
        secret, public_key = generate_ed25519_keypair()
        subscription.public_key = public_key
    else:
        secret = generate_webhook_secret()
    if expire_previous_in > 0:
        # Same row, same sealing context: the sealed value moves over without being opened.
        subscription.previous_secret_sealed = subscription.secret_sealed
        subscription.previous_secret_expires_at = now + timedelta(seconds=expire_previous_in)
    else:
        subscription.previous_secret_sealed = None
        subscription.previous_secret_expires_at = None
    subscription.secret_sealed = box.seal(secret, context=subscription.id)
    subscription.updated_at = now
    await session.flush()
    logger.info("subscription %s secret rotated; previous kept for %ds", subscription_id, expire_previous_in)
    return _secret_view(subscription, box, now=now)


def _secret_view(subscription: Subscription, box: SecretBox, *, now: datetime) -> RevealedSecret:
    secret = box.open(subscription.secret_sealed, context=subscription.id)
    expires = subscription.previous_secret_expires_at
    previous_active = subscription.previous_secret_sealed is not None and expires is not None and expires > now
    previous_public_key: str | None = None
    if previous_active and subscription.signature_type == SignatureType.ED25519 and subscription.previous_secret_sealed:
        previous = box.open(subscription.previous_secret_sealed, context=subscription.id)
        previous_public_key = public_key_for(previous)
    return RevealedSecret(
        secret=Revealed(secret),
        public_key=subscription.public_key,
        previous_secret_expires_at=expires if previous_active else None,
        previous_public_key=previous_public_key,
    )


async def send_test_event(db: Database, *, workspace_id: str, subscription_id: str) -> str:
    """Record a ``webhook.test`` event for this subscription alone and return its id; the caller hands it off.

    One statement: the event is inserted from the subscription's row, so only for a live subscription of the
    workspace (SubscriptionNotFound otherwise), where loading the subscription and then inserting took two. Its
    own transaction (``Database.write``), and no ORM object: the row's values are bound as they are."""
    if not looks_like_id(subscription_id, ID_PREFIX):
        raise SubscriptionNotFound()
    event_id = new_id("evt")
    inserted = await db.write(
        _INSERT_TEST_EVENT,
        {
            "event_id": event_id,
            "workspace_id": workspace_id,
            "subscription_id": subscription_id,
            "data": webhook_test_data(workspace_id=workspace_id, subscription_id=subscription_id),
            "created_at": utcnow(),
        },
    )
    if inserted != 1:
        raise SubscriptionNotFound()
    logger.info("test event %s recorded for subscription %s", event_id, subscription_id)
    return event_id


async def reseal_subscription_secrets(db: Database, box: SecretBox) -> ResealCount:
    """Re-encrypt every sealed secret not under the newest master key, never over a rotation made meanwhile."""
    return await reseal_columns(db, box, _subscriptions, ("secret_sealed", "previous_secret_sealed"))


async def _check_scope(session: AsyncSession, subscription: Subscription, resolve: ScopeResolver | None) -> None:
    """Every filtered connection and calendar must be the workspace's (422 naming the field otherwise); keeps
    their providers for matching lifecycle events."""
    connection_ids = subscription.connection_ids or []
    calendar_ids = subscription.calendar_ids or []
    if not connection_ids and not calendar_ids:
        subscription.scope_providers = None
        return
    known: dict[str, str] = {}
    if resolve is not None:
        known = await resolve(
            session, workspace_id=subscription.workspace_id, connection_ids=connection_ids, calendar_ids=calendar_ids
        )
    for field, ids in (("connection_ids", connection_ids), ("calendar_ids", calendar_ids)):
        unknown = [value for value in ids if value not in known]
        if unknown:
            # Another workspace's id is unknown here too: nothing tells it apart from a made-up one.
            raise ValidationFailed(f"{field}: no such id in this workspace: {unknown[0][:40]!r}", field=field)
    subscription.scope_providers = sorted(set(known.values()))


async def _write_filters(session: AsyncSession, subscription: Subscription) -> None:
    """One row per (pattern x provider, or ``*`` for every provider): what matching looks up."""
    await _delete_filters(session, subscription.id)
    providers = subscription.providers or [ANY]
    rows = [
        {
            "subscription_id": subscription.id,
            "workspace_id": subscription.workspace_id,
            "event_pattern": pattern,
            "provider": provider,
        }
        for pattern in dict.fromkeys(subscription.event_types or [ANY_EVENT])
        for provider in providers
    ]
    await session.execute(sa.insert(SubscriptionFilter), rows)


async def _delete_filters(session: AsyncSession, subscription_id: str) -> None:
    statement = sa.delete(SubscriptionFilter).where(col(SubscriptionFilter.subscription_id) == subscription_id)
    await session.execute(statement)
