"""The outbox relay: hands stored events to the delivery side; a cron sweeps up anything Redis lost."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from synchook.context import AppContext
from synchook.db import unindexed
from synchook.outbox import Event, undispatched_event_ids
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)


async def mark_dispatched(app: AppContext, event_ids: Sequence[str]) -> int:
    """The fallback dispatcher (no delivery engine wired): claim each event once, deliver nothing."""
    async with app.db.session() as session:
        result = await session.execute(
            update(Event)
            .where(Event.id.in_(list(event_ids)), unindexed(Event.dispatched_at).is_(None))  # type: ignore[attr-defined,arg-type]
            .values(dispatched_at=utcnow())
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def relay_events(ctx: dict[str, Any], event_ids: list[str]) -> int:
    app: AppContext = ctx["app"]
    dispatcher = app.extras.get("dispatch_events", mark_dispatched)
    return int(await dispatcher(app, event_ids))


async def sweep_outbox(ctx: dict[str, Any]) -> int:
    """Dispatch events whose hand-off never happened (Redis down at commit, queue flushed)."""
    app: AppContext = ctx["app"]
    dispatcher = app.extras.get("dispatch_events", mark_dispatched)
    total = 0
    while True:
        async with app.db.session() as session:
            ids = await undispatched_event_ids(
                session, older_than=timedelta(seconds=app.settings.relay_grace_seconds), limit=500
            )
        if not ids:
            return total
        handed = int(await dispatcher(app, ids))
        total += handed
        if handed == 0:
            return total
