"""One batch of deliveries, top to bottom: claim → prepare → send → record (→ schedule, by the recorder).

:func:`deliver` is the deliver job's whole work; :func:`run` also takes a batch the fan-out inserted
already leased. The lease is renewed while the batch runs and kept until every outcome is written. Sending is
endpoint by endpoint (:mod:`webhooks.delivery.sending`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from webhooks.delivery.claim import claim
from webhooks.delivery.lease import keep_lease
from webhooks.delivery.prepare import prepare
from webhooks.delivery.runtime import WorkerContext
from webhooks.delivery.sending import Sending
from webhooks.delivery.stages import Batch, Sent

__all__ = ["deliver", "run"]


async def deliver(worker: WorkerContext, delivery_ids: Sequence[str]) -> int:
    """Attempt every due delivery among ``delivery_ids``; returns how many were attempted."""
    batch = await claim(worker, delivery_ids)
    if batch is None:
        return 0
    return await run(worker, batch)


async def run(
    worker: WorkerContext, batch: Batch, *, background: bool = False, then: Callable[[], None] | None = None
) -> int:
    """Prepare, send and record a batch this worker holds the lease on; returns how many were attempted so far.

    Returns once every send has been made and recorded, or earlier, once only requests to slow endpoints are left:
    those finish on the worker (``WorkerContext.detached``), the lease kept and each outcome recorded. A hanging
    endpoint's requests otherwise held their jobs for a whole timeout. With ``background`` (a relay job's inline
    batch, bounded by the worker's inline budget) it returns as soon as the sends are under way. ``then`` is called
    once the batch is over, sent and recorded or failed, whether before this returns or after.
    """
    if worker.on_sending is not None:
        worker.on_sending()  # a relay group's inline batch: its fan-out has committed, the next one may start
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(keep_lease(worker.app, batch.lease, stop))
    try:
        prepared = await prepare(worker, batch)
        sending = Sending(worker, batch.lease, prepared.ready)
        # Cancelled, deferred and unsignable ones are settled already: recorded while the rest are sent.
        sending.written.append(worker.recorder.submit(batch.lease, prepared.settled))
    except BaseException:
        stop.set()
        await heartbeat
        if then is not None:
            then()
        raise
    finish = asyncio.create_task(_send_and_record(sending, stop, heartbeat))
    if then is not None:
        finish.add_done_callback(lambda _: then())
    detached = worker.detached
    if detached is not None and background:
        detached.keep(finish)
        return sum(1 for s in prepared.settled if isinstance(s, Sent))
    slow_left = None if detached is None else asyncio.create_task(sending.only_slow_left.wait())
    try:
        await asyncio.wait([t for t in (finish, slow_left) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        finish.cancel()  # the job is cancelled (shutdown, timeout): so are its sends, as before
        raise
    finally:
        if slow_left is not None:
            slow_left.cancel()
    if finish.done():
        finish.result()  # an outcome not recorded: the leases run out and the sweeper (or arq's retry) sends again
    elif detached is not None:
        detached.keep(finish)
    return sum(1 for s in (*prepared.settled, *sending.outcomes) if isinstance(s, Sent))


async def _send_and_record(sending: Sending, stop: asyncio.Event, heartbeat: asyncio.Task[None]) -> None:
    try:
        await sending.run()
        # The lease is kept until the outcomes are written, however long the database takes.
        results = await asyncio.gather(*sending.written, return_exceptions=True)
    finally:
        stop.set()
        await heartbeat
    for result in results:
        if isinstance(result, BaseException):
            raise result
