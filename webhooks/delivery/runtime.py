"""Per-worker state, built once when a worker starts (:func:`synchook.root.worker.build_worker`) and shared by its jobs.

``WorkerContext`` is what every delivery step is given: the process context, the HTTP client, the
recorder and the ``Runtime`` (per-endpoint concurrency slots and which endpoints are slow).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from synchook.context import AppContext
from synchook.settings import Settings
from webhooks import sender
from webhooks.delivery.detached import Detached
from webhooks.delivery.fanouts import FanOuts
from webhooks.delivery.recorder import Recorder
from webhooks.http_client import DeliveryClient

__all__ = ["INLINE_ROWS", "SLOW_FOR", "Runtime", "WorkerContext"]

# A subscription that timed out (or took over half the timeout) counts as slow this long.
SLOW_FOR = 30.0
# Deliveries the worker's relay jobs may hold to send themselves at a time (inserted leased, no claim, no deliver
# job); beyond this a fan-out's rows go to deliver jobs, which any worker claims. Held rows wait in their endpoint's
# queue (webhooks.delivery.sending), not as a task each: with no bound, 20 relay jobs of 5,000 rows took a worker of
# the benchmark's (g) to 201 MiB, against 296 when each waited as a task (the bound was then 12,000); with this one,
# 173.
INLINE_ROWS = 30_000


@dataclass(eq=False)
class Runtime:
    """The worker's view of its endpoints: concurrency slots and slowness."""

    settings: Settings
    slots: asyncio.Semaphore = field(init=False)
    per_subscription: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    # Subscriptions whose last attempt timed out or was slow, until when (monotonic), and sends in flight.
    slow: dict[str, float] = field(default_factory=dict)
    # An entry only while a send is in flight (send.py takes it out at 0): read it with .get, or the read adds one.
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Sends queued for a subscription's slots, each by the call that makes it give up: called when the subscription is
    # marked slow (see send.acquire_unless_slow).
    queued: dict[str, set[Callable[[], None]]] = field(default_factory=dict)
    # Called whenever an endpoint is marked slow: the batches sending, each checking whether only slow endpoints'
    # requests are left to it (webhooks.delivery.sending).
    slow_listeners: set[Callable[[], None]] = field(default_factory=set)
    # What is left of INLINE_ROWS (see take_inline).
    inline_free: int = INLINE_ROWS

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.settings.delivery_concurrency)

    def take_inline(self) -> bool:
        """Take one of the rows relay jobs may send themselves, if one is left (give it back once it is sent)."""
        if self.inline_free <= 0:
            return False
        self.inline_free -= 1
        return True

    def give_back_inline(self, count: int) -> None:
        self.inline_free += count

    def subscription_slots(self, subscription_id: str) -> asyncio.Semaphore:
        semaphore = self.per_subscription.get(subscription_id)
        if semaphore is None:
            if len(self.per_subscription) > 10_000:  # forget idle endpoints, keep the busy ones
                for key in [k for k, s in self.per_subscription.items() if not s.locked()]:
                    del self.per_subscription[key]
                    self.queued.pop(key, None)  # no send queues for its slots
            semaphore = self.per_subscription[subscription_id] = asyncio.Semaphore(
                self.settings.per_subscription_concurrency
            )
        return semaphore

    def is_slow(self, subscription_id: str, now: float) -> bool:
        until = self.slow.get(subscription_id)
        if until is None:
            return False
        if until < now:
            del self.slow[subscription_id]
            return False
        return True

    def mark_slow(self, subscription_id: str) -> None:
        self.slow[subscription_id] = time.monotonic() + SLOW_FOR
        for give_up in self.queued.pop(subscription_id, ()):
            give_up()
        for listener in list(self.slow_listeners):
            listener()

    def observe(self, subscription_id: str, outcome: sender.Outcome) -> None:
        if outcome.timed_out or outcome.duration_ms >= self.settings.delivery_timeout * 500:
            self.mark_slow(subscription_id)
        elif subscription_id in self.slow:
            del self.slow[subscription_id]


@dataclass(frozen=True, eq=False)
class WorkerContext:
    """Everything a delivery job uses, made once per worker process; the API process has none."""

    app: AppContext
    http: DeliveryClient
    recorder: Recorder
    runtime: Runtime
    fan_outs: FanOuts = field(default_factory=FanOuts)
    # The batches left to finish after their job ended; None where every job waits for all of its sends (a burst
    # worker, which stops once its queue is empty: what a batch left behind would enqueue would be left to the next).
    detached: Detached | None = field(default_factory=Detached)
    # Set on the copy a relay group's fan-out is given (webhooks.delivery.fanouts): called when its inline batch
    # starts sending, its transaction committed, so that the next group's fan-out starts then.
    on_sending: Callable[[], None] | None = None

    @classmethod
    def open(cls, app: AppContext, *, detach: bool = True) -> WorkerContext:
        return cls(
            app,
            sender.open_session(app.settings),
            Recorder(app),
            Runtime(app.settings),
            detached=Detached() if detach else None,
        )

    async def close(self) -> None:
        """Stop the relay fan-outs still running, let the batches left to finish on the worker finish, finish
        recording what was sent, then close the HTTP client."""
        await self.fan_outs.close()
        if self.detached is not None:
            await self.detached.wait()
        await self.recorder.close()
        await self.http.close()
