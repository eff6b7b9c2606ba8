"""The arq worker: every domain's tasks and crons over one shared context (composition root)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import cron
from arq.connections import ArqRedis
from arq.worker import Worker, func

import sync_trigger.tasks
import webhooks.tasks
from synchook import idempotency
from synchook.arq_worker import QueueWorker
from synchook.context import AppContext
from synchook.janitor import Liveness, new_worker_id
from synchook.metrics_totals import flush_engine_totals, flush_every
from synchook.queue import QUEUE_NAME, REDIS_LOST, decode_job, encode_job, redis_settings
from synchook.settings import Settings
from webhooks.delivery.runtime import WorkerContext

logger = logging.getLogger(__name__)

FUNCTIONS: list[Any] = [*sync_trigger.tasks.FUNCTIONS, *webhooks.tasks.FUNCTIONS]


def cron_jobs(settings: Settings) -> list[Any]:
    return [
        cron(idempotency.purge_expired_task, minute=17, second=0, unique=True, timeout=300),
        # Retention of the change feed, with the deliveries' (webhooks' purge_retention, the same minute).
        cron(sync_trigger.tasks.purge_changes, minute=17, second=0, unique=True, timeout=3600),
        *sync_trigger.tasks.cron_jobs(settings),
        *webhooks.tasks.cron_jobs(settings),
    ]


def build_worker(
    settings: Settings,
    *,
    redis: ArqRedis | None = None,
    burst: bool = False,
    handle_signals: bool = True,
    max_jobs: int = 20,
    with_cron: bool = True,
    inline_sqlite: bool = False,
) -> Worker:
    """A worker for `settings`; tests pass `burst=True` and their own Redis pool.

    ``inline_sqlite`` (a worker process of its own, :func:`run_worker`): SQLite on the loop's thread,
    see :mod:`synchook.sqlite.inline`. Not where the worker shares its loop with the API (``synchook
    dev``, tests): a transaction of the API's left open there would stall the whole loop in BEGIN.
    """
    # Every job (cron jobs too) is recorded as this worker's while it beats; a dead worker's are freed by the janitor.
    liveness = Liveness(new_worker_id())

    async def on_startup(ctx: dict[str, Any]) -> None:
        app = await AppContext.open(settings, redis=ctx["redis"], inline_sqlite=inline_sqlite)
        ctx["app"] = app
        # The delivery side's context, made here once: its HTTP session, recorder and endpoint slots.
        ctx[webhooks.tasks.CONTEXT] = WorkerContext.open(app, detach=not burst)
        ctx["worker_id"] = liveness.worker_id
        await liveness.start(ctx["redis"])
        ctx[_METRICS_FLUSH] = asyncio.create_task(flush_every(ctx["redis"]), name="worker.metrics-flush")

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        # arq has waited for the running jobs: nothing of this worker's is left to keep alive.
        await liveness.stop(ctx["redis"])
        # Absent only if start-up failed before it was made.
        delivery: WorkerContext | None = ctx.pop(webhooks.tasks.CONTEXT, None)
        if delivery is not None:
            await delivery.close()  # what was sent is recorded before the database closes
        await _last_metrics_flush(ctx)  # after the recorder's last outcomes
        app: AppContext | None = ctx.get("app")
        if app is not None:
            await app.db.close()

    if settings.redis_url is None and redis is None:
        raise RuntimeError("SYNCHOOK_REDIS_URL is required for a worker")
    if redis is not None and redis.job_deserializer is not decode_job:
        # The worker enqueues (crons, retries) through this pool: a pickling pool would undo the codec.
        raise ValueError("the worker's Redis pool must come from synchook.queue.connect (JSON jobs)")
    worker = QueueWorker(
        functions=[liveness.owned(func(f)) for f in FUNCTIONS],
        cron_jobs=[liveness.owned(c) for c in cron_jobs(settings)] if with_cron else [],
        queue_name=QUEUE_NAME,
        redis_settings=redis_settings(settings.redis_url) if redis is None and settings.redis_url else None,
        redis_pool=redis,
        job_serializer=encode_job,
        job_deserializer=decode_job,
        burst=burst,
        handle_signals=handle_signals,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=max_jobs,
        # arq reads only this many ready job ids from the head of the queue per poll. A SIGKILLed worker's
        # jobs stay at the head, "in progress", until the janitor frees them (seconds) or their key expires
        # (30 min with the default sync timeout): arq's default of 100 let five kills stall every worker.
        queue_read_limit=max(max_jobs * 50, 1000),
        job_timeout=settings.sync_job_timeout,
        keep_result=0,
        poll_delay=settings.worker_poll_delay,
        max_tries=1000,
        job_completion_wait=int(settings.delivery_timeout) + 5,
        log_results=False,
    )
    # The janitor ages an unowned job by how much of this in-progress timeout its key has left.
    liveness.in_progress_timeout_s = worker.in_progress_timeout_s
    return worker


_METRICS_FLUSH = "metrics_flush"


async def _last_metrics_flush(ctx: dict[str, Any]) -> None:
    flushing: asyncio.Task[None] | None = ctx.pop(_METRICS_FLUSH, None)
    if flushing is None:
        return
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    try:
        await flush_engine_totals(ctx["redis"])
    except Exception as exc:  # Redis gone as the worker stops: at most its last second of counts is lost
        logger.warning("last delivery metrics flush failed: %s", type(exc).__name__)


# arq's poll loop raises on the first Redis error (REDIS_LOST): a Redis restart would end every worker process.
REDIS_RETRY_DELAY = 1.0


async def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker until it stops (SIGTERM, or an empty queue with ``burst``), riding out Redis outages.

    When Redis goes away the worker is closed (its in-flight jobs finish and record to the database) and
    a fresh one is built and started once Redis answers again; the database rows are the truth, so
    nothing queued meanwhile is lost (the sweepers re-enqueue it).
    """
    while True:
        # arq binds the worker to the running loop: build it inside the loop that runs it.
        worker = build_worker(settings, burst=burst, inline_sqlite=True)
        try:
            with contextlib.suppress(asyncio.CancelledError):  # SIGTERM cancels the main task: a normal stop
                await worker.async_run()
            return
        except REDIS_LOST as exc:
            logger.warning("worker lost Redis (%s); starting again in %.0f s", type(exc).__name__, REDIS_RETRY_DELAY)
        finally:
            await close_worker(worker)
        await asyncio.sleep(REDIS_RETRY_DELAY)


async def close_worker(worker: Worker) -> None:
    """Stop a worker whose main loop has ended (or was cancelled), whatever its jobs and Redis are doing."""
    # In-flight jobs finish first (their outcomes go to the database) even where their Redis bookkeeping fails.
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    # close() would gather them again and re-raise a job's error, or its cancellation: arq's SIGTERM handler
    # cancels a job started while the signal arrived, and that ended a clean stop with a traceback.
    worker.tasks.clear()
    try:
        await worker.close()
    except REDIS_LOST:
        # close() stopped at its Redis call, before the shutdown hooks: run them so no pool or session leaks.
        if worker.on_shutdown is not None and "app" in worker.ctx:
            await worker.on_shutdown(worker.ctx)
