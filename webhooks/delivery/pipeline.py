"""One batch of deliveries, top to bottom: claim → prepare → send → record (→ schedule, by the recorder).

:func:`deliver` is the deliver job's whole work; :func:`run` also takes a batch the fan-out inserted
already leased. The lease is renewed while the batch runs and kept until every outcome is written.

A batch is sent endpoint by endpoint: each endpoint's ready deliveries wait in a queue of their own, sent in order
by as many senders as it has slots (``per_subscription_concurrency``). A delivery waiting its turn is then a tuple
in a queue, not a task: a task per delivery cost about 2 KB more for each one a worker held (tracemalloc), which
bounded how many rows a relay job may send itself (``runtime.INLINE_ROWS``). A slow endpoint holds back only its own
queue, as before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from webhooks.delivery.claim import claim
from webhooks.delivery.lease import Lease, keep_lease
from webhooks.delivery.prepare import prepare
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.send import send
from webhooks.delivery.stages import Batch, Deferred, Ready, Recorded, Sent

__all__ = ["deliver", "run"]


async def deliver(worker: WorkerContext, delivery_ids: Sequence[str]) -> int:
    """Attempt every due delivery among ``delivery_ids``; returns how many were attempted."""
    batch = await claim(worker, delivery_ids)
    if batch is None:
        return 0
    return await run(worker, batch)


async def run(worker: WorkerContext, batch: Batch) -> int:
    """Prepare, send and record a batch this worker holds the lease on; returns how many were attempted."""
    if worker.on_sending is not None:
        worker.on_sending()  # a relay group's inline batch: its fan-out has committed, the next one may start
    written: list[asyncio.Future[Recorded]] = []
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(keep_lease(worker.app, batch.lease, stop))
    try:
        prepared = await prepare(worker, batch)
        # Cancelled, deferred and unsignable ones are settled already: recorded while the rest are sent.
        written.append(worker.recorder.submit(batch.lease, prepared.settled))
        sent = await _send_by_endpoint(worker, batch.lease, prepared.ready, written)
        # The lease is kept until the outcomes are written, however long the database takes.
        results = await asyncio.gather(*written, return_exceptions=True)
    finally:
        stop.set()
        await heartbeat
    for result in results:
        if isinstance(result, BaseException):
            raise result  # not recorded: the leases run out and the sweeper (or arq's retry) sends them again
    return sum(1 for s in prepared.settled if isinstance(s, Sent)) + sum(1 for s in sent if isinstance(s, Sent))


async def _send_by_endpoint(
    worker: WorkerContext, lease: Lease, ready: Sequence[Ready], written: list[asyncio.Future[Recorded]]
) -> list[Sent | Deferred]:
    """Send every ready delivery, each endpoint's in order from a queue of its own; their outcomes."""
    queues: dict[str, deque[Ready]] = {}
    for one in ready:
        queues.setdefault(one.claimed.subscription_id, deque()).append(one)
    loop = asyncio.get_running_loop()
    # A rate-limited delivery's wait counts from now (when its slot was reserved), not from when its sender gets to it.
    began = loop.time()
    outcomes: list[Sent | Deferred] = []

    async def sender(queue: deque[Ready]) -> None:
        while queue:
            one = queue.popleft()
            if one.wait:
                one = one._replace(wait=max(0.0, began + one.wait - loop.time()))
            outcomes.append(await _send_and_record(worker, lease, one, written))

    per_endpoint = worker.app.settings.per_subscription_concurrency
    await asyncio.gather(*(sender(queue) for queue in queues.values() for _ in range(min(per_endpoint, len(queue)))))
    return outcomes


async def _send_and_record(
    worker: WorkerContext, lease: Lease, ready: Ready, written: list[asyncio.Future[Recorded]]
) -> Sent | Deferred:
    # A send that raised is not recorded: its lease runs out and it is tried again, no attempt used.
    result = await send(worker, ready)
    written.append(worker.recorder.submit(lease, [result]))
    return result
