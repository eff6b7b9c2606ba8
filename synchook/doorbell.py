"""The queue's doorbell: every enqueue publishes an empty message, and an idle worker waits for it.

arq's worker polls the queue every ``poll_delay`` (5 ms here, for latency): an idle worker made 200 Redis calls a
second, 5 % of a core per worker process and as much of redis-server, on a laptop running ``make run`` as on a
quiet server. Now a worker with nothing due waits for the doorbell (Redis pub/sub), for its own jobs' ends (a
slot freed), for the first deferred job's due time, or ``IDLE_WAIT`` at most; a busy worker polls as before.

The doorbell only wakes: the queue stays the truth. A ring that is lost (a pub/sub connection that dropped, a job
enqueued by a path that does not ring, such as arq's cron and retry bookkeeping) costs at most ``IDLE_WAIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from synchook.queue import DOORBELL_CHANNEL, REDIS_LOST

__all__ = ["IDLE_WAIT", "Doorbell", "ring"]

logger = logging.getLogger(__name__)

# The longest an idle worker goes without looking at the queue: what a missed ring costs, and how late an arq
# cron job (enqueued by the worker's own beat, up to a second ahead) can start.
IDLE_WAIT = 0.5
# After the pub/sub connection failed, the wait before subscribing again (meanwhile the worker polls every
# IDLE_WAIT, and its own poll reports a Redis that is gone).
_RESUBSCRIBE_DELAY = 1.0


async def ring(redis: Redis) -> None:
    """Wake the idle workers: a job was enqueued by a path whose script or pipeline does not ring itself."""
    await redis.publish(DOORBELL_CHANNEL, b"")


class Doorbell:
    """One worker's subscription: ``rung`` is set by each ring (and by the worker itself when a job ends)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.rung = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listening = asyncio.create_task(self._listen(), name="queue doorbell")

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = None

    async def wait(self, timeout: float) -> None:
        """Until a ring (or one that came since the last ``clear``), or ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.rung.wait()

    async def _listen(self) -> None:
        while True:
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(DOORBELL_CHANNEL)
                # Rings between the worker's last poll and this subscription would be lost: look once more.
                self.rung.set()
                async for _message in pubsub.listen():
                    self.rung.set()
            except REDIS_LOST as exc:
                logger.debug("queue doorbell: %s; subscribing again", type(exc).__name__)
            finally:
                with contextlib.suppress(*REDIS_LOST):
                    await pubsub.aclose()
            self.rung.set()
            await asyncio.sleep(_RESUBSCRIBE_DELAY)
