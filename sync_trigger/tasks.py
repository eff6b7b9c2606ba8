"""arq functions of the sync domain: thin wrappers that take ids and call the service."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from arq import Retry, cron

from sync_trigger import runner, service
from sync_trigger.background import background_cron_jobs
from sync_trigger.calendar_index.changes import purge_changes as purge_changes_older
from sync_trigger.models import SyncJob
from sync_trigger.push import debounce
from sync_trigger.push import tasks as push_tasks
from synchook.context import AppContext
from synchook.db import is_connection_error
from synchook.janitor import live_workers
from synchook.outbox import hand_off
from synchook.settings import Settings
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

# A job still queued this long was lost by the queue (Redis flushed, enqueue failed at commit).
QUEUED_GRACE = timedelta(seconds=30)
# Change events per relay job when a sync hands them off: a Google page's worth.
RELAY_CHUNK = 250


async def run_sync_job(ctx: dict[str, Any], job_id: str) -> str:
    """Run one job: queued → running, the connectors, then completed | failed; safe to re-run after a crash."""
    app: AppContext = ctx["app"]
    try:
        return await _run(app, job_id, worker_id=ctx.get("worker_id"))
    except Exception as exc:
        if is_connection_error(exc):
            # The database blinked: arq runs the job again later; the conditional updates keep it exactly-once.
            logger.warning("sync job %s deferred, database unavailable: %s", job_id, type(exc).__name__)
            raise Retry(defer=5) from exc
        raise


async def _run(app: AppContext, job_id: str, *, worker_id: str | None = None) -> str:
    async with app.db.session() as session:
        started = await service.start_job(session, job_id=job_id, worker_id=worker_id)
    if started is None:
        return "noop"
    await hand_off(app.enqueue, started.event_ids)
    stats: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # The sync's change events go to the queue after the job's own last write (see sync_trigger.runner).
    change_event_ids: list[str] = []
    if started.exhausted:
        error = {"code": "internal_error", "message": "The sync was interrupted too many times"}
    elif started.connections_deleted:
        stats = runner.SyncStats().as_dict()
        error = {"code": "connection_deleted", "message": "The calendar connection was deleted before the sync ran"}
    else:
        # Leave arq's own job timeout a margin, so a slow sync fails with its event instead of hanging.
        budget = max(1.0, app.settings.sync_job_timeout * 0.9)
        try:
            result = await asyncio.wait_for(runner.run_sync(app, started.job, started.connections), timeout=budget)
            stats, changes, change_event_ids = result.as_dict(), result.changes(), result.event_ids
        except runner.SyncFailure as failure:
            stats, error, change_event_ids = failure.stats.as_dict(), failure.as_error(), failure.stats.event_ids
        except runner.JobEnded:
            # Failed meanwhile (its connection was deleted), with its event: nothing left to record.
            return "noop"
        except TimeoutError:
            error = {"code": "timeout", "message": f"The sync did not finish within {int(budget)} seconds"}
        except Exception as exc:
            if is_connection_error(exc):
                raise
            logger.exception("sync job %s failed unexpectedly", job_id)
            error = {"code": "internal_error", "message": "The sync failed unexpectedly"}
    async with app.db.session() as session:
        event_ids = await service.finish_job(session, job_id=job_id, stats=stats, error=error, changes=changes)
    # A relay job per page's worth of change events: one for a 10,000-event import fanned 100,000 deliveries
    # out in one transaction (SQLite's write lock held throughout) on one worker, which peaked at 264 MiB.
    for start in range(0, len(change_event_ids), RELAY_CHUNK):
        await hand_off(app.enqueue, change_event_ids[start : start + RELAY_CHUNK])
    await hand_off(app.enqueue, event_ids)
    await _push_follow_up(app, started.job)
    return "failed" if error is not None else "completed"


async def _push_follow_up(app: AppContext, job: SyncJob) -> None:
    # After the end is committed: notifications that arrived while the job ran get their one follow-up sync.
    try:
        await debounce.follow_up(app, job)
    except Exception as exc:
        # The waiting push_syncs check back on their own (debounce.CHECK_BACK): later, not lost.
        if is_connection_error(exc):
            return
        logger.warning("sync job %s: push follow-up not enqueued: %s", job.id, type(exc).__name__)


async def push_sync(ctx: dict[str, Any], calendar_id: str, token: str) -> str:
    """A calendar's push debounce window closed: queue one incremental sync of it, unless one covers it."""
    app: AppContext = ctx["app"]
    try:
        return str(await debounce.push_sync(app, calendar_id, token))
    except Exception as exc:
        if is_connection_error(exc):
            logger.warning("push sync of %s deferred, database unavailable: %s", calendar_id, type(exc).__name__)
            raise Retry(defer=5) from exc
        raise


async def recover_sync_jobs(ctx: dict[str, Any]) -> int:
    """Re-enqueue jobs the queue lost; arq's job-id dedup means a job still queued is not doubled.

    A running job whose worker stopped beating (killed, or `synchook dev` restarted with a fresh Redis)
    is run again at once: it resumes where the calendar cursors stand, or fails if its connection is gone.
    """
    app: AppContext = ctx["app"]
    now = utcnow()
    async with app.db.session() as session:
        job_ids = await service.stale_job_ids(
            session,
            queued_before=now - QUEUED_GRACE,
            running_before=now - timedelta(seconds=app.settings.sync_job_timeout),
        )
    job_ids += [j for j in await _orphaned_job_ids(app) if j not in job_ids]
    requeued = 0
    for job_id in job_ids:
        if await service.enqueue_job_run(app.enqueue, job_id):
            requeued += 1
    if requeued:
        logger.info("re-enqueued %d lost sync job(s)", requeued)
    return requeued


async def _orphaned_job_ids(app: AppContext) -> list[str]:
    """Running jobs whose recorded worker has no heartbeat (synchook.janitor)."""
    if app.redis is None:
        return []
    async with app.db.session() as session:
        owners = await service.running_job_owners(session)
    alive = await live_workers(app.redis, (worker_id for _, worker_id in owners))
    return [job_id for job_id, worker_id in owners if worker_id not in alive]


async def purge_changes(ctx: dict[str, Any]) -> int:
    """Retention of the change feed: changes go after SYNCHOOK_RETENTION_DAYS, like deliveries (the root runs it)."""
    app: AppContext = ctx["app"]
    return await purge_changes_older(app.db, retention_days=app.settings.retention_days)


FUNCTIONS: list[Any] = [run_sync_job, push_sync, *push_tasks.FUNCTIONS]


def cron_jobs(settings: Settings) -> list[Any]:
    return [
        # Every 5 s (and at start-up): a dead worker's running job is back within seconds. One indexed query.
        cron(recover_sync_jobs, second=set(range(0, 60, 5)), run_at_startup=True, unique=True, timeout=120),
        *background_cron_jobs(settings),
        *push_tasks.cron_jobs(settings),
    ]
