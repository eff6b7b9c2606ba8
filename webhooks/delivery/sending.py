"""Send a batch's ready deliveries endpoint by endpoint, and tell when only slow endpoints' requests are left.

Each endpoint's deliveries wait in a queue of their own, sent in order by as many senders as it has slots
(``per_subscription_concurrency``). A delivery waiting its turn is then a tuple in a queue, not a task: a task per
delivery cost about 2 KB more for each one a worker held (tracemalloc), which bounded how many rows a relay job may
send itself (``runtime.INLINE_ROWS``). A slow endpoint holds back only its own queue. For the same reason a batch runs
at most ``delivery_concurrency`` senders at once, not one per endpoint: the rest wait as their endpoint's id.

``only_slow_left`` is set once every endpoint still sending is slow: the job may then end and leave those requests to
finish on the worker (see :func:`webhooks.delivery.pipeline.run`), rather than hold one of its job slots for them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence

from webhooks.delivery.lease import Lease
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.send import send
from webhooks.delivery.stages import Deferred, Ready, Recorded, Sent

__all__ = ["Sending"]


class Sending:
    """One batch's sends: its endpoints' queues, their outcomes, and the writes of those outcomes."""

    def __init__(self, worker: WorkerContext, lease: Lease, ready: Sequence[Ready]) -> None:
        self._worker = worker
        self._lease = lease
        self._queues: dict[str, deque[Ready]] = {}
        for one in ready:
            self._queues.setdefault(one.claimed.subscription_id, deque()).append(one)
        per_endpoint = worker.app.settings.per_subscription_concurrency
        # Senders not yet finished (started or not), by endpoint.
        self._senders = {sub_id: min(per_endpoint, len(queue)) for sub_id, queue in self._queues.items()}
        # The senders to start, each endpoint's first before any endpoint's second: at most the worker's
        # delivery_concurrency of them run at once (see run).
        self._to_start: deque[str] = deque(
            sub_id
            for turn in range(max(self._senders.values(), default=0))
            for sub_id, count in self._senders.items()
            if count > turn
        )
        self.outcomes: list[Sent | Deferred] = []
        self.written: list[asyncio.Future[Recorded]] = []
        self.only_slow_left = asyncio.Event()

    async def run(self) -> None:
        """Send every delivery, each outcome kept in ``outcomes`` and submitted to the recorder as it comes
        (``written``)."""
        runtime = self._worker.runtime
        # A rate-limited delivery's wait counts from now (when its slot was reserved), not from its sender's turn.
        began = asyncio.get_running_loop().time()
        # No more tasks than the worker can have requests in flight. With a task per sender, a batch to a thousand
        # endpoints was a thousand tasks waiting for the worker's slots, about 1.9 KB each: 60,000 deliveries to
        # 10,000 workspaces took a worker to 204-232 MiB, against 194-196 with runners.
        runners = [self._runner(began) for _ in range(min(len(self._to_start), runtime.settings.delivery_concurrency))]
        runtime.slow_listeners.add(self._check)
        try:
            self._check()
            await asyncio.gather(*runners)
        finally:
            runtime.slow_listeners.discard(self._check)

    async def _runner(self, began: float) -> None:
        while self._to_start:
            sub_id = self._to_start.popleft()
            await self._sender(sub_id, self._queues[sub_id], began)

    async def _sender(self, sub_id: str, queue: deque[Ready], began: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while queue:
                one = queue.popleft()
                if one.wait:
                    one = one._replace(wait=max(0.0, began + one.wait - loop.time()))
                # A send that raised is not recorded: its lease runs out and it is tried again, no attempt used.
                outcome = await send(self._worker, one)
                self.written.append(self._worker.recorder.submit(self._lease, [outcome]))
                self.outcomes.append(outcome)
        finally:
            self._senders[sub_id] -= 1
            if not self._senders[sub_id]:
                del self._senders[sub_id]
            self._check()

    def _check(self) -> None:
        if self.only_slow_left.is_set() or not self._senders:
            return
        runtime, clock = self._worker.runtime, time.monotonic()
        if all(runtime.is_slow(sub_id, clock) for sub_id in self._senders):
            self.only_slow_left.set()
