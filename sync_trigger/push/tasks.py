"""arq functions of push channels (CONTRACT §7): thin wrappers that take ids and call `lifecycle`.

Names other parts enqueue: `push_renew_channel(calendar_id)` (renew now: Graph reauthorizationRequired) and
`push_recreate_channel(calendar_id)` (a new channel: Graph subscriptionRemoved).
"""

from __future__ import annotations

import logging
from typing import Any

from arq import cron

from sync_trigger.push import lifecycle, service
from synchook.context import AppContext
from synchook.settings import Settings
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

# Renewals are due an hour before expiry and retries back off from 60 s: a tick every 30 s is plenty.
RENEW_TICK_SECONDS = 30
# Channels considered per tick; the rest are due on the next tick (oldest first, so none starves).
RENEW_BATCH = 200


async def push_ensure_channels(ctx: dict[str, Any], connection_id: str) -> int:
    """A channel for each synced calendar of the connection that has none (queued after its syncs)."""
    return await lifecycle.ensure_channels(ctx["app"], connection_id)


async def push_renew_channel(ctx: dict[str, Any], calendar_id: str, only_due: bool = False) -> str:
    """Renew the calendar's channel now (the cron passes `only_due`: renew only if still due)."""
    status = await lifecycle.refresh_channel(ctx["app"], calendar_id, only_due=only_due)
    return str(status or "noop")


async def push_recreate_channel(ctx: dict[str, Any], calendar_id: str) -> str:
    """Replace the calendar's channel with a new one (the provider removed it)."""
    status = await lifecycle.refresh_channel(ctx["app"], calendar_id, recreate=True)
    return str(status or "noop")


async def push_stop_channels(
    ctx: dict[str, Any],
    connection_id: str,
    provider: str,
    access_token_sealed: str,
    refresh_token_sealed: str,
    token_expires_at: str | None,
    channels: list[list[str | None]],
) -> int:
    """Stop a deleted connection's channels (the arguments of service.StopOrder.as_args: tokens still sealed)."""
    order = service.StopOrder(
        connection_id=connection_id,
        provider=provider,
        access_token_sealed=access_token_sealed,
        refresh_token_sealed=refresh_token_sealed,
        token_expires_at=token_expires_at,
        channels=tuple((str(c[0]), c[1]) for c in channels if c and c[0]),
    )
    return await lifecycle.stop_channels(ctx["app"], order)


async def renew_push_channels(ctx: dict[str, Any]) -> int:
    """The renewal cron: queue a renewal for each channel due (renewal, a failure's retry, a dead worker's create)."""
    app: AppContext = ctx["app"]
    if not app.settings.push_enabled:
        return 0
    async with app.db.session() as session:
        due = await service.due_for_renewal(session, now=utcnow(), limit=RENEW_BATCH)
    queued = 0
    for calendar_id in due:
        # One queued renewal per calendar (arq refuses a second job with the same id); the lease does the rest.
        job = await app.enqueue(
            service.RENEW_TASK, calendar_id, only_due=True, _job_id=f"{service.RENEW_TASK}:{calendar_id}"
        )
        queued += job is not None
    if queued:
        logger.info("queued %d push channel renewal(s)", queued)
    return queued


FUNCTIONS: list[Any] = [push_ensure_channels, push_renew_channel, push_recreate_channel, push_stop_channels]


def cron_jobs(settings: Settings) -> list[Any]:
    if not settings.push_enabled:
        return []
    return [
        cron(
            renew_push_channels,
            second=set(range(0, 60, RENEW_TICK_SECONDS)),
            run_at_startup=True,
            unique=True,
            timeout=60,
        )
    ]
