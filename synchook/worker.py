"""The arq worker: every domain's tasks and crons over one shared context (composition root)."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron
from arq.connections import ArqRedis
from arq.worker import Worker

import sync_trigger.tasks
import webhooks.tasks
from synchook import relay
from synchook.context import AppContext
from synchook.queue import QUEUE_NAME, redis_settings
from synchook.settings import Settings

logger = logging.getLogger(__name__)

FUNCTIONS: list[Any] = [relay.relay_events, *sync_trigger.tasks.FUNCTIONS, *webhooks.tasks.FUNCTIONS]
STARTUP = [*sync_trigger.tasks.STARTUP, *webhooks.tasks.STARTUP]
SHUTDOWN = [*webhooks.tasks.SHUTDOWN, *sync_trigger.tasks.SHUTDOWN]


def cron_jobs(settings: Settings) -> list[Any]:
    every_10s = set(range(0, 60, 10))
    return [
        cron(relay.sweep_outbox, second=every_10s, run_at_startup=True, unique=True, timeout=300),
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
) -> Worker:
    """A worker for `settings`; tests pass `burst=True` and their own Redis pool."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        app = await AppContext.open(settings, redis=ctx["redis"])
        ctx["app"] = app
        for hook in STARTUP:
            await hook(ctx)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        for hook in SHUTDOWN:
            await hook(ctx)
        app: AppContext | None = ctx.get("app")
        if app is not None:
            await app.db.close()

    if settings.redis_url is None and redis is None:
        raise RuntimeError("SYNCHOOK_REDIS_URL is required for a worker")
    return Worker(
        functions=FUNCTIONS,
        cron_jobs=cron_jobs(settings) if with_cron else [],
        queue_name=QUEUE_NAME,
        redis_settings=redis_settings(settings.redis_url) if redis is None and settings.redis_url else None,
        redis_pool=redis,
        burst=burst,
        handle_signals=handle_signals,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=max_jobs,
        job_timeout=settings.sync_job_timeout,
        keep_result=0,
        poll_delay=settings.worker_poll_delay,
        max_tries=1000,
        job_completion_wait=int(settings.delivery_timeout) + 5,
        log_results=False,
    )
