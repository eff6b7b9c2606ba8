"""The worker's batches that finish after their job ended: requests to slow endpoints, their records and leases.

A job whose sends left are all to slow endpoints ends (see :func:`webhooks.delivery.pipeline.run`), and the rest of
its batch runs on here: its lease kept, each outcome recorded. A failure is logged and left as any job's failure is:
the leases run out and the sweeper sends those deliveries again. The worker waits for these when it stops.

On PostgreSQL a relay job's inline batch runs on here too (``pipeline.run(background=True)``, see webhooks.dispatch
for why not on SQLite): its rows are bounded by the worker's inline budget, and the job's work, the fan-out, is done
once its transaction has committed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["Detached"]

logger = logging.getLogger(__name__)


class Detached:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Let ``task`` run on after its job."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("a batch left to finish after its job failed, left to the sweeper: %s", type(exc).__name__)

    async def wait(self) -> None:
        """Wait for those running now (worker shutdown): each ends within its requests' timeout and its writes."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
