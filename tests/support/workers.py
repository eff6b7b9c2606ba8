"""Running an in-process arq worker in the background of a test, and waiting on a condition or on a worker's sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from arq.worker import Worker

from webhooks.delivery.runtime import WorkerContext

__all__ = ["running", "sends_finished", "wait_until"]


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


async def sends_finished(worker: WorkerContext) -> None:
    """Wait for the sends that go on after their jobs (a relay job's inline batch): sent and recorded."""
    assert worker.detached is not None
    await worker.detached.wait()
