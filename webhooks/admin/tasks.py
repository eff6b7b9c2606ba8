"""arq functions of the admin side: the bulk-replay job, and crons that resume stalled replays and purge old rows."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron, func

from synchook.context import AppContext
from synchook.settings import Settings
from webhooks.admin import replays
from webhooks.admin.retention import purge_expired
from webhooks.constants import BULK_REPLAY_TASK

logger = logging.getLogger(__name__)


async def run_bulk_replay(ctx: dict[str, Any], replay_id: str) -> str | None:
    """BULK_REPLAY_TASK: work through one bulk replay; returns its final status."""
    app: AppContext = ctx["app"]
    replay = await replays.run_bulk_replay(app, replay_id)
    return replay.status if replay is not None else None


async def resume_replays(ctx: dict[str, Any]) -> int:
    return await replays.resume_stalled_replays(ctx["app"])


async def purge_retention(ctx: dict[str, Any]) -> int:
    app: AppContext = ctx["app"]
    purged = await purge_expired(app.db, retention_days=app.settings.retention_days)
    return purged.deliveries + purged.events


FUNCTIONS: list[Any] = [func(run_bulk_replay, name=BULK_REPLAY_TASK)]


def cron_jobs(settings: Settings) -> list[Any]:
    return [
        cron(resume_replays, second={30}, unique=True, timeout=60),
        cron(purge_retention, minute={17}, second={0}, unique=True, timeout=3600),
    ]
