"""Running an in-process arq worker in the background of a test, and waiting on a condition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from arq.worker import Worker

__all__ = ["running", "wait_until"]


async def wait_until(predicate: Callable[[], bool], *, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """The worker polls in a task until the block ends (then it is cancelled, as SIGINT would)."""
    task = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
