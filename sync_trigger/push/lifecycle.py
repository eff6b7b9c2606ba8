"""Push channels at the providers (CONTRACT §7; PROVIDERS.md §1.5, §2.5): created after a calendar's first sync,
renewed before they expire, retried with backoff when that fails, stopped with their connection.

Typed steps per calendar: lease the row (`Leased`) → call the provider (`Confirmed`) → record the outcome → retire
the channel it replaced. One row per calendar holds its current channel; the lease keeps two workers from working
on one calendar at once, and a worker that dies mid-call leaves a lease that runs out, after which the renewal
cron takes the row up again. Channel secrets (Google's token, Graph's clientState) are stored sealed (context =
the calendar id), held in memory as `Revealed`, and never logged.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

import aiohttp
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger import runner
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import (
    ChangeChannel,
    ChannelGone,
    ConnectorError,
    GoogleConnector,
    MicrosoftConnector,
    ReauthRequired,
    Tokens,
    build_connector,
)
from sync_trigger.models import Connection, ConnectionStatus
from sync_trigger.push import service
from sync_trigger.push.models import PushChannel, PushStatus
from synchook.context import AppContext
from synchook.crypto import DecryptionError, Revealed
from synchook.ids import new_id
from synchook.providers import Provider
from synchook.timeutil import parse_datetime, utcnow

logger = logging.getLogger(__name__)

# Longer than any one channel call can take (the requester gives up on throttling after max_throttle_wait,
# 120 s by default; Graph's create waits up to 10 s for our validation answer).
LEASE = timedelta(minutes=5)
RENEW_MARGIN = timedelta(hours=1)
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
CHANNEL_ID_PREFIX = "pch"  # Google channel ids are ours: [A-Za-z0-9-_+/=]{1,64}


def renewal_time(expires_at: datetime, *, now: datetime) -> datetime:
    """An hour before expiry, or 10 % of the lifetime before it when that is shorter (short test lifetimes)."""
    margin = min(RENEW_MARGIN, max(expires_at - now, timedelta(0)) / 10)
    return expires_at - margin


def retry_delay(failures: int) -> timedelta:
    """After the n-th consecutive failure: 60 s, doubling, at most an hour."""
    exponent = min(max(failures - 1, 0), 16)
    return timedelta(seconds=min(RETRY_FIRST_SECONDS * 2**exponent, RETRY_MAX_SECONDS))


def new_secret() -> Revealed:
    # 43 url-safe characters: within Google's 256 for a token and Graph's 128 for a clientState.
    return Revealed(secrets.token_urlsafe(32))


class Action(StrEnum):
    CREATE = "create"  # no live channel: a new one (Google: its id and token stored before the call)
    REPLACE = "replace"  # Google: a new channel, then channels.stop of the old one
    RENEW = "renew"  # Graph: PATCH the expiry (a 404 there: create a new subscription)
    RECREATE = "recreate"  # Graph: a new subscription, the old one deleted (subscriptionRemoved)


@dataclass(frozen=True)
class Leased:
    """A calendar whose channel row this worker holds the lease on, and what to do with it."""

    calendar_id: str  # cal_
    provider_calendar_id: str
    connection: Connection
    action: Action
    failures: int
    old_channel_id: str | None  # the channel the row holds now
    old_resource_id: str | None
    new_channel_id: str | None = None  # Google: ours, chosen before the call
    secret: Revealed | None = None  # the new channel's token / clientState; None keeps the stored one (PATCH)


@dataclass(frozen=True)
class Confirmed:
    channel: ChangeChannel
    secret: Revealed | None  # to store (sealed), when the channel is new
    retire: tuple[str, str | None] | None  # (channel id, resource id) of the replaced channel, to stop


# --- Step 1: the lease -----------------------------------------------------------------------------


async def _lease(
    app: AppContext, calendar_id: str, *, recreate: bool, only_due: bool, only_missing: bool = False
) -> Leased | None:
    """Take the calendar's row (creating it when the calendar has none); None: nothing to do or someone else's."""
    now = utcnow()
    try:
        async with app.db.session() as session:
            found = (
                await session.execute(
                    select(Calendar, Connection)
                    .join(Connection, col(Connection.id) == col(Calendar.connection_id))
                    .where(col(Calendar.id) == calendar_id)
                )
            ).first()
            if found is None:
                return None
            calendar, connection = found
            if connection.provider not in service.PUSH_PROVIDERS:
                return None
            existing = await session.get(PushChannel, calendar_id)
            if existing is None:
                if only_due:
                    return None
                return _insert(session, app, calendar, connection, now)
            if only_missing:
                # Made meanwhile by another worker (ensure_channels listed the calendar before): theirs, not replaced.
                return None
            channel = await service.claim(
                session, calendar_id=calendar_id, now=now, lease=LEASE, due_by=now if only_due else None
            )
            if channel is None:
                return None
            return await _plan(session, app, calendar, connection, channel, now, recreate=recreate)
    except IntegrityError:
        # Another worker created this calendar's row first: the channel is theirs to make.
        return None


def _insert(
    session: AsyncSession, app: AppContext, calendar: Calendar, connection: Connection, now: datetime
) -> Leased:
    secret = new_secret()
    channel_id = new_id(CHANNEL_ID_PREFIX) if connection.provider == Provider.GOOGLE else None
    row = PushChannel(
        calendar_id=calendar.id,
        workspace_id=calendar.workspace_id,
        connection_id=connection.id,
        provider=connection.provider,
        status=PushStatus.PENDING,
        # Google's id and token are known before the watch call: a notification arriving during it is recognised.
        channel_id=channel_id,
        secret_sealed=app.box.seal(secret.reveal(), context=calendar.id),
        # A worker dying in the call leaves the row pending; the cron retries it once the lease ran out.
        renew_at=now + LEASE,
        leased_until=now + LEASE,
        failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    return Leased(
        calendar_id=calendar.id,
        provider_calendar_id=calendar.calendar_id,
        connection=connection,
        action=Action.CREATE,
        failures=0,
        old_channel_id=None,
        old_resource_id=None,
        new_channel_id=channel_id,
        secret=secret,
    )


async def _plan(
    session: AsyncSession,
    app: AppContext,
    calendar: Calendar,
    connection: Connection,
    channel: PushChannel,
    now: datetime,
    *,
    recreate: bool,
) -> Leased:
    lease = Leased(
        calendar_id=calendar.id,
        provider_calendar_id=calendar.calendar_id,
        connection=connection,
        action=Action.CREATE,
        failures=channel.failures,
        old_channel_id=channel.channel_id,
        old_resource_id=channel.resource_id,
    )
    values: dict[str, object] = {"updated_at": now, "renew_at": now + LEASE}
    if connection.provider == Provider.GOOGLE:
        secret, channel_id = new_secret(), new_id(CHANNEL_ID_PREFIX)
        if channel.resource_id is not None:
            # A live channel: it keeps its row (and its notifications) until the new one is confirmed.
            return replace(lease, action=Action.REPLACE, new_channel_id=channel_id, secret=secret)
        # Nothing live: like a first create, the id and token are stored before the call.
        values.update(
            status=PushStatus.PENDING,
            channel_id=channel_id,
            secret_sealed=app.box.seal(secret.reveal(), context=calendar.id),
        )
        await service.update_channel(session, calendar_id=calendar.id, values=values)
        return replace(lease, action=Action.CREATE, new_channel_id=channel_id, secret=secret)
    if channel.channel_id is not None and not recreate:
        return replace(lease, action=Action.RENEW)
    if recreate:
        # Graph removed it: not active any more until the new one exists.
        values.update(status=PushStatus.PENDING)
        await service.update_channel(session, calendar_id=calendar.id, values=values)
    action = Action.RECREATE if channel.channel_id is not None else Action.CREATE
    return replace(lease, action=action, secret=new_secret())


# --- Step 2: the provider call ---------------------------------------------------------------------


def _connector(
    app: AppContext, http: aiohttp.ClientSession, *, provider: str, connection_id: str, tokens: Tokens
) -> GoogleConnector | MicrosoftConnector:
    """The provider's connector over the connection's tokens; a refresh is stored on the connection (if it still
    exists) like any sync's."""
    connector = build_connector(
        provider,
        http,
        runner.provider_endpoints(app.settings),
        tokens,
        runner.token_saver(app, connection_id),
        max_throttle_wait=app.settings.max_throttle_wait,
    )
    assert isinstance(connector, GoogleConnector | MicrosoftConnector)
    return connector


def _live_connector(
    app: AppContext, http: aiohttp.ClientSession, connection: Connection
) -> GoogleConnector | MicrosoftConnector:
    if connection.status != ConnectionStatus.ACTIVE:
        raise ReauthRequired("the connection needs to be reconnected before push can be set up")
    tokens = runner.open_tokens(app, connection)
    return _connector(app, http, provider=connection.provider, connection_id=connection.id, tokens=tokens)


async def _confirm(app: AppContext, connector: GoogleConnector | MicrosoftConnector, lease: Leased) -> Confirmed:
    settings = app.settings
    if isinstance(connector, GoogleConnector):
        assert lease.new_channel_id is not None and lease.secret is not None
        channel = await connector.watch(
            lease.provider_calendar_id,
            channel_id=lease.new_channel_id,
            address=service.public_endpoint(settings, service.GOOGLE_NOTIFICATIONS),
            token=lease.secret.reveal(),
        )
        retire = None
        if lease.action is Action.REPLACE and lease.old_channel_id is not None:
            retire = (lease.old_channel_id, lease.old_resource_id)
        return Confirmed(channel, lease.secret, retire)
    if lease.action is Action.RENEW and lease.old_channel_id is not None:
        try:
            return Confirmed(await connector.renew_subscription(lease.old_channel_id), None, None)
        except ChannelGone:
            logger.info("push: the Graph subscription of calendar %s is gone, creating a new one", lease.calendar_id)
    secret = lease.secret or new_secret()
    channel = await connector.subscribe(
        lease.provider_calendar_id,
        notification_url=service.public_endpoint(settings, service.MICROSOFT_NOTIFICATIONS),
        lifecycle_url=service.public_endpoint(settings, service.MICROSOFT_LIFECYCLE),
        client_state=secret.reveal(),
    )
    retire = (lease.old_channel_id, None) if lease.action is Action.RECREATE and lease.old_channel_id else None
    return Confirmed(channel, secret, retire)


# --- Steps 3 and 4: record, retire -----------------------------------------------------------------


async def _record_active(app: AppContext, lease: Leased, confirmed: Confirmed) -> bool:
    """False when the row went meanwhile (calendar or connection deleted): the new channel is then retired."""
    now = utcnow()
    values: dict[str, object] = {
        "status": PushStatus.ACTIVE,
        "channel_id": confirmed.channel.channel_id,
        "resource_id": confirmed.channel.resource_id,
        "expires_at": confirmed.channel.expires_at,
        "renew_at": renewal_time(confirmed.channel.expires_at, now=now),
        "failures": 0,
        "updated_at": now,
    }
    if confirmed.secret is not None:
        values["secret_sealed"] = app.box.seal(confirmed.secret.reveal(), context=lease.calendar_id)
    async with app.db.session() as session:
        return await service.release(session, calendar_id=lease.calendar_id, values=values) == 1


async def _record_failure(app: AppContext, lease: Leased, reason: str) -> None:
    now = utcnow()
    failures = lease.failures + 1
    logger.warning(
        "push: %s of the channel of calendar %s failed (%d in a row, retry in %s): %s",
        lease.action,
        lease.calendar_id,
        failures,
        retry_delay(failures),
        reason,
    )
    values: dict[str, object] = {
        "status": PushStatus.FAILED,
        "failures": failures,
        "renew_at": now + retry_delay(failures),
        "updated_at": now,
    }
    async with app.db.session() as session:
        await service.release(session, calendar_id=lease.calendar_id, values=values)


async def _retire(connector: GoogleConnector | MicrosoftConnector, channel: tuple[str, str | None]) -> None:
    """Stop a channel no row holds any more; best effort (it expires at the provider anyway)."""
    channel_id, resource_id = channel
    try:
        if isinstance(connector, GoogleConnector):
            if resource_id is not None:
                await connector.stop_channel(channel_id, resource_id)
        else:
            await connector.delete_subscription(channel_id)
    except ConnectorError as exc:
        logger.warning("push: a replaced %s channel was not stopped (%s); it expires", connector.provider, exc.code)


# --- The operations --------------------------------------------------------------------------------


async def refresh_channel(
    app: AppContext, calendar_id: str, *, recreate: bool = False, only_due: bool = False, only_missing: bool = False
) -> PushStatus | None:
    """Create, renew or replace the calendar's channel as its row calls for; the status it ends in (None: nothing
    was done: push off, no such Google/Microsoft calendar, another worker on it, — `only_due` — not due, or —
    `only_missing` — the calendar has a channel row already)."""
    if not app.settings.push_enabled:
        return None
    lease = await _lease(app, calendar_id, recreate=recreate, only_due=only_due, only_missing=only_missing)
    if lease is None:
        return None
    try:
        async with aiohttp.ClientSession(timeout=runner.HTTP_TIMEOUT) as http:
            connector = _live_connector(app, http, lease.connection)
            confirmed = await _confirm(app, connector, lease)
            kept = await _record_active(app, lease, confirmed)
            if not kept:
                await _retire(connector, (confirmed.channel.channel_id, confirmed.channel.resource_id))
                return None
            if confirmed.retire is not None:
                await _retire(connector, confirmed.retire)
    except ConnectorError as exc:
        await _record_failure(app, lease, f"{exc.code}: {exc.message}")
        return PushStatus.FAILED
    except DecryptionError:
        await _record_failure(app, lease, "this worker's secret keys cannot open the connection's tokens")
        return PushStatus.FAILED
    except Exception as exc:
        await _record_failure(app, lease, f"unexpected {type(exc).__name__}")
        raise
    return PushStatus.ACTIVE


async def ensure_channels(app: AppContext, connection_id: str) -> int:
    """A channel for each synced calendar of the connection that has none; returns how many became active."""
    if not app.settings.push_enabled:
        return 0
    async with app.db.session() as session:
        calendar_ids = await service.calendars_without_channel(session, connection_id=connection_id)
    created = 0
    for calendar_id in calendar_ids:
        if await refresh_channel(app, calendar_id, only_missing=True) is PushStatus.ACTIVE:
            created += 1
    return created


async def stop_channels(app: AppContext, order: service.StopOrder) -> int:
    """Stop a deleted connection's (or a vanished calendar's) channels; returns how many the provider stopped."""
    async with app.db.session() as session:
        connection = await session.get(Connection, order.connection_id)
    stopped = 0
    try:
        if connection is not None:  # a vanished calendar: the connection's tokens as they are now
            tokens = runner.open_tokens(app, connection)
        else:  # a deleted connection: the tokens it had, carried sealed by the order
            tokens = Tokens(
                access_token=app.box.open(order.access_token_sealed, context=order.connection_id),
                refresh_token=app.box.open(order.refresh_token_sealed, context=order.connection_id),
                expires_at=parse_datetime(order.token_expires_at) if order.token_expires_at else None,
            )
        async with aiohttp.ClientSession(timeout=runner.HTTP_TIMEOUT) as http:
            connector = _connector(app, http, provider=order.provider, connection_id=order.connection_id, tokens=tokens)
            for channel_id, resource_id in order.channels:
                try:
                    if isinstance(connector, GoogleConnector):
                        stopped += bool(resource_id and await connector.stop_channel(channel_id, resource_id))
                    else:
                        stopped += await connector.delete_subscription(channel_id)
                except ConnectorError as exc:
                    logger.warning("push: a channel of connection %s not stopped: %s", order.connection_id, exc.code)
    except (ConnectorError, DecryptionError) as exc:
        logger.warning("push: channels of connection %s not stopped: %s", order.connection_id, type(exc).__name__)
    return stopped
