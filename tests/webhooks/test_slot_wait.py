"""A send queued for one of its endpoint's slots gets the next free one, or gives up the moment the
endpoint turns slow (its delivery is handed back without an attempt)."""

from __future__ import annotations

import asyncio

import pytest

from synchook.settings import Settings
from webhooks.delivery.runtime import Runtime
from webhooks.delivery.send import acquire_unless_slow


@pytest.fixture
def runtime() -> Runtime:
    return Runtime(Settings(per_subscription_concurrency=1))


async def test_a_queued_send_takes_the_slot_when_it_is_released(runtime: Runtime) -> None:
    slots = runtime.subscription_slots("sub_a")
    assert await acquire_unless_slow(runtime, "sub_a", slots)
    waiting = asyncio.create_task(acquire_unless_slow(runtime, "sub_a", slots))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    slots.release()
    assert await asyncio.wait_for(waiting, 1) is True
    assert slots.locked()  # the waiter holds it now


async def test_queued_sends_give_up_when_the_endpoint_turns_slow_and_leave_the_slot_count_whole(
    runtime: Runtime,
) -> None:
    slots = runtime.subscription_slots("sub_a")
    assert await acquire_unless_slow(runtime, "sub_a", slots)
    waiting = [asyncio.create_task(acquire_unless_slow(runtime, "sub_a", slots)) for _ in range(50)]
    other = asyncio.create_task(acquire_unless_slow(runtime, "sub_b", runtime.subscription_slots("sub_b")))
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiting)
    runtime.mark_slow("sub_a")
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [False] * 50
    assert await other is True  # another endpoint is not affected
    slots.release()
    assert not slots.locked()  # none of the 50 kept a slot
    # Already slow, slots busy: gives up at once instead of queueing.
    assert await acquire_unless_slow(runtime, "sub_a", slots)
    assert await asyncio.wait_for(acquire_unless_slow(runtime, "sub_a", slots), 1) is False


async def test_forgetting_idle_endpoints_keeps_the_queued_sends_of_busy_ones(runtime: Runtime) -> None:
    idle = runtime.subscription_slots("sub_idle")
    busy = runtime.subscription_slots("sub_busy")
    assert await acquire_unless_slow(runtime, "sub_busy", busy)
    waiting = asyncio.create_task(acquire_unless_slow(runtime, "sub_busy", busy))
    await asyncio.sleep(0.01)
    for n in range(10_001):  # past the limit: the next new endpoint prunes the idle ones
        runtime.subscription_slots(f"sub_{n}")
    assert "sub_idle" not in runtime.per_subscription and "sub_idle" not in runtime.queued
    assert runtime.per_subscription["sub_busy"] is busy and len(runtime.queued["sub_busy"]) == 1
    assert not idle.locked()
    runtime.mark_slow("sub_busy")  # the queued send still hears it
    assert await asyncio.wait_for(waiting, 1) is False
    assert "sub_busy" not in runtime.queued


async def test_a_queued_send_cancelled_from_outside_is_cancelled_even_if_its_endpoint_turns_slow(
    runtime: Runtime,
) -> None:
    slots = runtime.subscription_slots("sub_a")
    assert await acquire_unless_slow(runtime, "sub_a", slots)
    waiting = asyncio.create_task(acquire_unless_slow(runtime, "sub_a", slots))
    await asyncio.sleep(0.01)
    waiting.cancel()  # a worker shutting down
    runtime.mark_slow("sub_a")
    with pytest.raises(asyncio.CancelledError):
        await waiting
    slots.release()
    assert not slots.locked() and "sub_a" not in runtime.queued


async def test_a_slot_handed_over_as_the_endpoint_turns_slow_is_passed_on_not_lost(runtime: Runtime) -> None:
    slots = runtime.subscription_slots("sub_a")
    assert await acquire_unless_slow(runtime, "sub_a", slots)
    first = asyncio.create_task(acquire_unless_slow(runtime, "sub_a", slots))
    await asyncio.sleep(0.01)
    slots.release()  # handed to the queued send, which has not run yet...
    runtime.mark_slow("sub_a")  # ...when it is told to give up
    assert await asyncio.wait_for(first, 1) is False
    assert not slots.locked()  # the slot it was handed went back
