"""arq functions of the delivery engine: thin wrappers that take ids and call the services."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry, cron

from synchook.context import AppContext
from synchook.db import is_connection_error
from synchook.settings import Settings
from webhooks import engine, sweeper
from webhooks.admin import tasks as admin_tasks
from webhooks.dispatch import dispatch_events

logger = logging.getLogger(__name__)

RUNTIME_KEY = "webhooks_runtime"


async def deliver(ctx: dict[str, Any], delivery_ids: list[str]) -> int:
    """DELIVER_TASK: attempt the due deliveries among these ids."""
    app: AppContext = ctx["app"]
    try:
        return await engine.deliver(app, ctx[RUNTIME_KEY], delivery_ids)
    except Exception as exc:
        if is_connection_error(exc):
            # The database blinked before the claim or after the sends: leases expire and the sweeper
            # (or this retry) picks the rows up again; at worst a receiver sees a duplicate.
            logger.warning("deliver deferred, database unavailable: %s", type(exc).__name__)
            raise Retry(defer=5) from exc
        raise


async def sweep_deliveries(ctx: dict[str, Any]) -> int:
    return await sweeper.sweep_deliveries(ctx["app"])


async def startup(ctx: dict[str, Any]) -> None:
    app: AppContext = ctx["app"]
    ctx[RUNTIME_KEY] = app.extras[engine.RUNTIME_EXTRA] = engine.Runtime.open(app.settings)
    app.extras["dispatch_events"] = dispatch_events


async def shutdown(ctx: dict[str, Any]) -> None:
    runtime: engine.Runtime | None = ctx.pop(RUNTIME_KEY, None)
    app: AppContext | None = ctx.get("app")
    if app is not None:
        app.extras.pop(engine.RUNTIME_EXTRA, None)
    if runtime is not None:
        await runtime.close()


FUNCTIONS: list[Any] = [deliver, *admin_tasks.FUNCTIONS]
STARTUP: list[Callable[[dict[str, Any]], Awaitable[None]]] = [startup]
SHUTDOWN: list[Callable[[dict[str, Any]], Awaitable[None]]] = [shutdown]


# Seconds between two sweeps: the longest a due delivery nobody enqueued (no Redis at hand) waits for a worker.
SWEEP_EVERY_S = 5


def cron_jobs(settings: Settings) -> list[Any]:
    return [
        cron(sweep_deliveries, second=set(range(0, 60, SWEEP_EVERY_S)), run_at_startup=True, unique=True, timeout=120),
        *admin_tasks.cron_jobs(settings),
    ]
