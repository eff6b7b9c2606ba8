"""arq functions of the delivery side: thin wrappers that take ids and call the services.

Each reads the worker's ``WorkerContext`` (built by :func:`synchook.root.worker.build_worker` at start-up)
through :func:`worker_context`; the outbox relay's task and cron are here too: the fan-out is their work.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from arq import Retry, cron

from synchook import relay
from synchook.db import is_connection_error
from synchook.settings import Settings
from webhooks import sweeper
from webhooks.admin import tasks as admin_tasks
from webhooks.delivery import pipeline
from webhooks.delivery.runtime import WorkerContext
from webhooks.dispatch import dispatch_events

__all__ = ["CONTEXT", "FUNCTIONS", "SWEEP_EVERY_S", "cron_jobs", "worker_context"]

logger = logging.getLogger(__name__)

# The key under which the worker keeps its WorkerContext in arq's ctx.
CONTEXT = "webhooks"


def worker_context(ctx: dict[str, Any]) -> WorkerContext:
    """The worker's delivery context; a KeyError if the worker was built without one (never a fallback)."""
    worker = ctx[CONTEXT]
    if not isinstance(worker, WorkerContext):
        raise TypeError(f"ctx[{CONTEXT!r}] is a {type(worker).__name__}, not a WorkerContext")
    return worker


async def deliver(ctx: dict[str, Any], delivery_ids: list[str]) -> int:
    """DELIVER_TASK: attempt the due deliveries among these ids."""
    try:
        return await pipeline.deliver(worker_context(ctx), delivery_ids)
    except Exception as exc:
        if is_connection_error(exc):
            # The database blinked before the claim or after the sends: leases expire and the sweeper
            # (or this retry) picks the rows up again; at worst a receiver sees a duplicate.
            logger.warning("deliver deferred, database unavailable: %s", type(exc).__name__)
            raise Retry(defer=5) from exc
        raise


async def relay_events(ctx: dict[str, Any], event_ids: list[str]) -> int:
    """RELAY_TASK: fan these outbox events out into deliveries, with those of the worker's other relay jobs that
    arrived while its fan-out transactions were open (the first batch sent by the worker itself)."""
    worker = worker_context(ctx)
    return await worker.fan_outs.relay(event_ids, partial(_fan_out, worker))


async def _fan_out(worker: WorkerContext, event_ids: list[str], on_commit: Callable[[], None]) -> int:
    return await dispatch_events(worker.app, event_ids, worker=dataclasses.replace(worker, on_sending=on_commit))


async def sweep_outbox(ctx: dict[str, Any]) -> int:
    """Dispatch events whose hand-off never happened (Redis down at commit, queue flushed)."""
    worker = worker_context(ctx)
    return await relay.sweep_outbox(worker.app, partial(dispatch_events, worker.app, worker=worker))


async def sweep_deliveries(ctx: dict[str, Any]) -> int:
    return await sweeper.sweep_deliveries(worker_context(ctx).app)


FUNCTIONS: list[Any] = [relay_events, deliver, *admin_tasks.FUNCTIONS]


# Seconds between two sweeps: the longest a due delivery nobody enqueued (no Redis at hand) waits for a worker.
SWEEP_EVERY_S = 5


def cron_jobs(settings: Settings) -> list[Any]:
    every_10s = set(range(0, 60, 10))
    return [
        cron(sweep_outbox, second=every_10s, run_at_startup=True, unique=True, timeout=300),
        cron(sweep_deliveries, second=set(range(0, 60, SWEEP_EVERY_S)), run_at_startup=True, unique=True, timeout=120),
        *admin_tasks.cron_jobs(settings),
    ]
