"""Runs the provider side of a sync job: connectors in, calendar index out, exact stats.

Per connection: open its tokens, list calendars, then per calendar one round of changes, each
provider page applied in its own transaction (a 5,000-event calendar is never held in memory).
The cursor is stored with the round's final page, so a round cut short is simply redone.

The change events each page commits are collected in the stats, not handed to the queue page by page:
the job hands them off once it has finished (tasks._run). Handed off at once, their fan-out and
deliveries ran beside the rest of the sync on the same workers and, on SQLite, the same write lock:
a 10,000-event first import with 10 subscriptions took 18-20 x as long as without them (docs/performance.md,
scenario (g)). The relay sweeper still dispatches the events of a sync that runs past `relay_grace_seconds`,
so a long import's deliveries start while it runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import update
from sqlmodel import col

from sync_trigger import service
from sync_trigger.calendar_index import service as index
from sync_trigger.calendar_index.models import Calendar
from sync_trigger.connectors import (
    PROVIDERS,
    CalDAVCredentials,
    Connector,
    ConnectorError,
    CursorExpired,
    ProviderEndpoints,
    ProviderRateLimited,
    ReauthRequired,
    RetryHook,
    RetryNotice,
    Tokens,
    UrlCheck,
    build_connector,
)
from sync_trigger.connectors.base import TokensCallback
from sync_trigger.models import Connection, ConnectionStatus, SyncJob
from sync_trigger.push import service as push
from sync_trigger.service import DEFAULT_LOOKAHEAD, DEFAULT_LOOKBACK
from synchook.context import AppContext
from synchook.crypto import DecryptionError
from synchook.settings import Settings
from synchook.timeutil import utcnow
from synchook.url_safety import UnsafeURL, check_as_configured

logger = logging.getLogger(__name__)

# Per request: connect fast, but a provider may take a while to build a large page.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=90)


@dataclass
class SyncStats:
    calendars: int = 0
    events_created: int = 0
    events_updated: int = 0
    events_deleted: int = 0
    # The highest change sequence this sync wrote (None: it wrote none): `through_sequence` of §6.2.
    through_sequence: int | None = field(default=None, compare=False)
    # The committed change events (outbox ids) to hand to the queue when the job ends.
    event_ids: list[str] = field(default_factory=list, compare=False, repr=False)

    def as_dict(self) -> dict[str, int]:
        """The job's `stats` (§4.1)."""
        return {
            "calendars": self.calendars,
            "events_created": self.events_created,
            "events_updated": self.events_updated,
            "events_deleted": self.events_deleted,
        }

    def changes(self) -> dict[str, int | None]:
        """`data.changes` of calendar.sync.completed (§6.2)."""
        return {
            "created": self.events_created,
            "updated": self.events_updated,
            "deleted": self.events_deleted,
            "through_sequence": self.through_sequence,
        }

    def add(self, counts: index.IndexCounts) -> None:
        self.events_created += counts.created
        self.events_updated += counts.updated
        self.events_deleted += counts.deleted
        if counts.last_sequence is not None:
            self.through_sequence = max(self.through_sequence or 0, counts.last_sequence)
        self.event_ids += counts.event_ids


class JobEnded(Exception):
    """The job is no longer running (failed meanwhile: its connection was deleted); stop syncing for it."""


class SyncFailure(Exception):
    def __init__(self, code: str, message: str, stats: SyncStats | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stats = stats or SyncStats()

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def provider_endpoints(settings: Settings) -> ProviderEndpoints:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return ProviderEndpoints(
        google_api_url=settings.google_api_url,
        google_token_url=settings.google_token_url,
        microsoft_graph_url=settings.microsoft_graph_url,
        microsoft_token_url=settings.microsoft_token_url,
        google_client_id=settings.google_client_id,
        google_client_secret=secret(settings.google_client_secret),
        microsoft_client_id=settings.microsoft_client_id,
        microsoft_client_secret=secret(settings.microsoft_client_secret),
    )


def _url_check(settings: Settings) -> UrlCheck:
    """CONTRACT §8: every CalDAV server URL, redirect and href passes the webhook URL-safety check."""

    async def check(url: str) -> str:
        try:
            return await check_as_configured(settings, url)
        except UnsafeURL as exc:
            raise ValueError(exc.reason) from None

    return check


def job_window(job: SyncJob, *, now: datetime) -> tuple[datetime, datetime]:
    """The full-sync window: the job's own (mode=full) or the default now-90d .. now+180d."""
    if job.mode == "full" and job.from_date is not None and job.to_date is not None:
        return job.from_date, job.to_date
    return now - DEFAULT_LOOKBACK, now + DEFAULT_LOOKAHEAD


async def run_sync(app: AppContext, job: SyncJob, connections: list[Connection]) -> SyncStats:
    """Sync every connection of the job into the calendar index; raise SyncFailure on failure.

    A failing connection does not stop the others; the job fails with the first failure, its stats
    counting everything that was applied.

    An orchestration of many units of work (one per provider page, cursor and retry notice), so it takes one
    explicit context, `app` (database, secret box, settings), and opens each transaction itself.
    """
    stats = SyncStats()
    failures: list[SyncFailure] = []
    wanted = [
        c
        for c in connections
        if (job.provider is None or c.provider == job.provider)
        and (job.connection_id is None or c.id == job.connection_id)
        and c.workspace_id == job.workspace_id
    ]
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        for connection in wanted:
            await _require_running(app, job)
            try:
                await _sync_connection(app, http, job, connection, stats)
            except SyncFailure as failure:
                logger.warning("sync job %s: connection %s failed: %s", job.id, connection.id, failure.code)
                failures.append(failure)
    if failures:
        first = failures[0]
        raise SyncFailure(first.code, first.message, stats)
    return stats


async def _sync_connection(
    app: AppContext, http: aiohttp.ClientSession, job: SyncJob, connection: Connection, stats: SyncStats
) -> None:
    label = "CalDAV" if connection.provider == "caldav" else connection.provider.capitalize()
    if connection.provider not in PROVIDERS:
        raise SyncFailure("connector_unavailable", f"No calendar connector for provider {connection.provider!r}")
    try:
        tokens = open_tokens(app, connection)
    except DecryptionError:
        # Our key, not the account: this worker's SYNCHOOK_SECRET_KEY lacks the key that sealed the tokens (one
        # not yet rolled out to it). The tokens are fine, so the connection stays active for a worker that has it.
        raise SyncFailure(
            "secret_key_unavailable",
            f"This worker cannot decrypt the stored {label} tokens (its secret keys lack the one that sealed them); "
            "the connection is unchanged",
        ) from None

    caldav = None
    if connection.provider == "caldav":
        caldav = CalDAVCredentials(connection.server_url or "", connection.username or "", tokens.access_token)
    connector = build_connector(
        connection.provider,
        http,
        provider_endpoints(app.settings),
        tokens,
        token_saver(app, connection.id),
        max_throttle_wait=app.settings.max_throttle_wait,
        on_retry=_retry_reporter(app, job.id),
        caldav=caldav,
        check_url=_url_check(app.settings),
    )
    try:
        await _sync_calendars(app, connector, job, connection, stats)
    except ReauthRequired as exc:
        await _mark_reauth_required(app, connection)
        raise SyncFailure(
            "reauth_required",
            "The CalDAV server rejected the username or password; reconnect with a new app-specific password"
            if caldav is not None
            else f"{label} no longer accepts this connection's tokens; reconnect the account",
        ) from exc
    except ProviderRateLimited as exc:
        raise SyncFailure("provider_rate_limited", exc.message) from exc
    except ConnectorError as exc:
        raise SyncFailure("provider_error", exc.message) from exc
    async with app.db.session() as session:
        await session.execute(
            update(Connection).where(col(Connection.id) == connection.id).values(last_synced_at=utcnow())
        )
    # Its calendars synced: the ones without a push channel get one, from a task (§7).
    await push.after_connection_synced(app, connection)


def open_tokens(app: AppContext, connection: Connection) -> Tokens:
    """The connection's tokens (a CalDAV password is its access token); raises DecryptionError without our key."""
    return Tokens(
        access_token=app.box.open(connection.access_token_sealed, context=connection.id),
        refresh_token=app.box.open(connection.refresh_token_sealed, context=connection.id),
        expires_at=connection.token_expires_at,
    )


def token_saver(app: AppContext, connection_id: str) -> TokensCallback:
    """Persists refreshed tokens, sealed, in their own short transaction at once: Microsoft has already revoked
    the refresh token it replaced. A connection deleted meanwhile is simply not updated."""

    async def save_tokens(fresh: Tokens) -> None:
        values: dict[str, Any] = {
            "access_token_sealed": app.box.seal(fresh.access_token, context=connection_id),
            "token_expires_at": fresh.expires_at,
        }
        if fresh.refresh_token:
            values["refresh_token_sealed"] = app.box.seal(fresh.refresh_token, context=connection_id)
        async with app.db.session() as session:
            await session.execute(update(Connection).where(col(Connection.id) == connection_id).values(**values))

    return save_tokens


async def _sync_calendars(
    app: AppContext, connector: Connector, job: SyncJob, connection: Connection, stats: SyncStats
) -> None:
    if job.calendar_id is not None:
        # A push job syncs the one calendar it was notified about: no calendar list, its index row as it stands.
        calendars = await _indexed_calendar(app, connection, job.calendar_id)
    else:
        listed = await connector.list_calendars()
        vanished = await push.vanished_channels(app.db, connection=connection, listed=listed)
        calendars, removed = await index.sync_calendars(app.db, connection=connection, calendars=listed, job_id=job.id)
        await push.queue_stop(app, vanished)
        stats.add(removed)
    window = job_window(job, now=utcnow())
    for calendar in calendars:
        await _require_running(app, job)
        if job.mode == "full":
            # Rebuild inside the window: everything the full round does not report there is removed.
            await index.set_cursor(app.db, calendar=calendar, cursor=None)
            await _full_round(app, connector, job, calendar, window, sweep=window, stats=stats)
        elif calendar.sync_cursor is None:
            await _full_round(app, connector, job, calendar, window, sweep=window, stats=stats)
        else:
            try:
                await _incremental_round(app, connector, job, calendar, stats)
            except CursorExpired:
                logger.info("calendar %s: sync cursor expired, full re-sync", calendar.id)
                await index.set_cursor(app.db, calendar=calendar, cursor=None)
                # The provider forgot our state: nothing local can be trusted, so sweep the whole calendar.
                await _full_round(app, connector, job, calendar, window, sweep=None, stats=stats)
        stats.calendars += 1


async def _indexed_calendar(app: AppContext, connection: Connection, calendar_id: str) -> list[Calendar]:
    """The calendar's index row, if it still belongs to `connection` (a calendar removed since: nothing to sync)."""
    async with app.db.session() as session:
        calendar = await session.get(Calendar, calendar_id)
    if calendar is None or calendar.connection_id != connection.id:
        return []
    return [calendar]


async def _incremental_round(
    app: AppContext, connector: Connector, job: SyncJob, calendar: Calendar, stats: SyncStats
) -> None:
    async for page in connector.changes(calendar.calendar_id, cursor=calendar.sync_cursor):
        counts = await index.apply_changes(
            app.db, calendar=calendar, changes=page.changes, cursor=page.next_cursor, job_id=job.id
        )
        stats.add(counts)


async def _full_round(
    app: AppContext,
    connector: Connector,
    job: SyncJob,
    calendar: Calendar,
    window: tuple[datetime, datetime],
    *,
    sweep: tuple[datetime, datetime] | None,
    stats: SyncStats,
) -> None:
    """One full round over `window`, retried once when the provider expires it mid-way, then the sweep."""
    for attempt in (1, 2):
        seen: set[str] = set()
        try:
            async for page in connector.changes(calendar.calendar_id, cursor=None, window=window):
                counts = await index.apply_changes(
                    app.db, calendar=calendar, changes=page.changes, seen=seen, job_id=job.id
                )
                stats.add(counts)
                if page.next_cursor is not None:
                    # The final page: sweep before storing the cursor, so a crash in between redoes the round.
                    swept = await index.sweep_calendar(
                        app.db, calendar=calendar, keep=seen, window=sweep, job_id=job.id
                    )
                    stats.add(swept)
                    await index.set_cursor(app.db, calendar=calendar, cursor=page.next_cursor)
            return
        except CursorExpired:
            if attempt == 2:
                raise
            logger.info("calendar %s: full round expired mid-way, starting over", calendar.id)


async def _require_running(app: AppContext, job: SyncJob) -> None:
    # One indexed read per connection and calendar: a job failed meanwhile stops writing to the index.
    async with app.db.session() as session:
        running = await service.is_running(session, job_id=job.id)
    if not running:
        raise JobEnded(job.id)


def _retry_reporter(app: AppContext, job_id: str) -> RetryHook:
    """Shows a retried provider request on the job (GET /v1/calendar/sync/{id}), and clears it after."""

    async def report(notice: RetryNotice | None) -> None:
        try:
            async with app.db.session() as session:
                if notice is None:
                    await service.record_retry(session, job_id=job_id, attempt=None, at=None, error=None)
                else:
                    await service.record_retry(
                        session,
                        job_id=job_id,
                        attempt=notice.attempt,
                        at=utcnow() + timedelta(seconds=notice.delay),
                        error={"code": notice.error.code, "message": notice.error.message},
                    )
        except Exception as exc:
            # Only the progress display is lost; the sync itself goes on.
            logger.warning("sync job %s: retry state not recorded: %s", job_id, type(exc).__name__)

    return report


async def _mark_reauth_required(app: AppContext, connection: Connection) -> None:
    async with app.db.session() as session:
        await session.execute(
            update(Connection)
            .where(col(Connection.id) == connection.id)
            .values(status=ConnectionStatus.REAUTH_REQUIRED)
        )
    connection.status = ConnectionStatus.REAUTH_REQUIRED
