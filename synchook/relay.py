"""The outbox relay's sweep: hands events whose hand-off never happened to the delivery side's dispatcher.

The relay task itself (``RELAY_TASK``) and this sweep's cron belong to the delivery side, which passes
its dispatcher in: the kernel does not know how events become deliveries.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from synchook.context import AppContext
from synchook.outbox import Dispatcher, undispatched_event_ids

__all__ = ["sweep_outbox"]

logger = logging.getLogger(__name__)


async def sweep_outbox(app: AppContext, dispatch: Dispatcher) -> int:
    """Dispatch events whose hand-off never happened (Redis down at commit, queue flushed); returns how many."""
    total = 0
    while True:
        async with app.db.session() as session:
            ids = await undispatched_event_ids(
                session, older_than=timedelta(seconds=app.settings.relay_grace_seconds), limit=500
            )
        if not ids:
            return total
        handed = int(await dispatch(ids))
        total += handed
        if handed == 0:
            return total
