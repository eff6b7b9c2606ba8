"""Send: one signed POST for a ready delivery, within its endpoint's and the worker's concurrency limits.

A ready delivery becomes ``Sent`` (whatever the receiver answered, or why it did not), or ``Deferred``
with no attempt used when its endpoint turned slow while it waited for a slot, or the rate limit's
last gate did not let it through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from synchook import metrics as _metrics
from synchook.context import AppContext
from synchook.timeutil import utcnow
from webhooks import sender, throttle
from webhooks.delivery.prepare import MAX_THROTTLE_SLEEP
from webhooks.delivery.runtime import Runtime, WorkerContext
from webhooks.delivery.stages import Deferred, Ready, Sent
from webhooks.signing import build_headers

__all__ = ["send"]

logger = logging.getLogger(__name__)


async def send(worker: WorkerContext, ready: Ready) -> Sent | Deferred:
    settings = worker.app.settings
    runtime = worker.runtime
    claimed = ready.claimed
    if ready.wait > 0:
        await asyncio.sleep(ready.wait)
    sub_id = claimed.subscription_id
    slots = runtime.subscription_slots(sub_id)
    if not await acquire_unless_slow(runtime, sub_id, slots):
        # The endpoint turned slow while this waited for one of its slots: hand the delivery back (no
        # attempt used) rather than hold this job, and the healthy deliveries behind it, for a timeout.
        return Deferred(claimed, utcnow() + timedelta(seconds=settings.delivery_timeout))
    runtime.in_flight[sub_id] += 1
    flag: asyncio.TimerHandle | None = None
    try:
        async with runtime.slots:
            limit = ready.subscription.rate_limit_per_second
            if limit and not await _admitted(worker.app, ready, limit):
                return Deferred(claimed, utcnow() + timedelta(seconds=1))
            body = ready.body.raw
            headers = build_headers(claimed.event_id, int(time.time()), body, ready.signer, sender.USER_AGENT)
            # Mark the endpoint slow as soon as its request has taken half the timeout, not when it finally times
            # out. From here, not before the worker's slots: time queued behind the worker's other sends is the
            # worker's load, not the endpoint's, and counting it marked healthy endpoints slow whenever a worker had
            # a backlog (a few hundred deliveries deferred at a time in (a) of the bench, each a write and a job).
            flag = asyncio.get_running_loop().call_later(settings.delivery_timeout / 2, runtime.mark_slow, sub_id)
            outcome = await sender.post(
                worker.http,
                ready.subscription.url,
                body,
                headers,
                timeout=settings.delivery_timeout,
                allow_private=settings.allow_private_targets,
            )
    finally:
        if flag is not None:
            flag.cancel()
        slots.release()
        runtime.in_flight[sub_id] -= 1
        if not runtime.in_flight[sub_id]:
            del runtime.in_flight[sub_id]
    runtime.observe(sub_id, outcome)
    _metrics.record_attempt(_attempt_kind(outcome), outcome.duration_ms / 1000)
    return Sent(claimed, outcome)


async def _admitted(app: AppContext, ready: Ready, limit: int) -> bool:
    sub_id = ready.claimed.subscription_id
    if app.redis is None:
        return False  # no shared limiter, no send: the limit is a promise to the receiver
    try:
        return await throttle.admit(
            app.redis, sub_id, limit=limit, member=ready.claimed.id, max_wait=MAX_THROTTLE_SLEEP
        )
    except Exception as exc:
        logger.warning("rate limiter unavailable for %s: %s", sub_id, type(exc).__name__)
        return False


async def acquire_unless_slow(runtime: Runtime, sub_id: str, slots: asyncio.Semaphore) -> bool:
    """Take one of the subscription's slots; False (none taken) once it is slow and its slots are all busy."""
    if not slots.locked():
        await slots.acquire()
        return True
    if runtime.is_slow(sub_id, time.monotonic()):
        return False
    # Wait for a slot; if the endpoint turns slow first, mark_slow cancels this wait, and the cancellation is taken
    # back here. No polling (thousands of queued sends each waking every few milliseconds cost a worker a tenth of its
    # time), and no second task and asyncio.wait per queued send: their callbacks all hung on one shared future, and
    # each send that got its slot removed its own with a scan of that list, quadratic in the queue of one endpoint.
    task = asyncio.current_task()
    assert task is not None
    gave_up = False

    def give_up() -> None:
        nonlocal gave_up
        gave_up = True
        task.cancel()

    queued = runtime.queued.setdefault(sub_id, set())
    queued.add(give_up)
    try:
        await slots.acquire()  # a slot handed over just as this is cancelled goes back to the next waiter
        return True
    except asyncio.CancelledError:
        if gave_up and task.uncancel() == 0:
            return False
        raise  # cancelled from outside too (worker shutdown): not ours to swallow
    finally:
        queued.discard(give_up)
        if not queued and runtime.queued.get(sub_id) is queued:
            del runtime.queued[sub_id]


def _attempt_kind(outcome: sender.Outcome) -> str:
    if outcome.ok:
        return "succeeded"
    if outcome.timed_out:
        return "timeout"
    return "failed" if outcome.status_code is not None else "error"
