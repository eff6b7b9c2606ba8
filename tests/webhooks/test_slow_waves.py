"""A slow endpoint's deliveries in a batch are put off to when one of its slots can take them.

In a batch shared with healthy endpoints, only as many as the slow endpoint has free slots come
back at once (in a job of their own); the rest go straight to their wave, one timeout apart per
``per_subscription_concurrency``, instead of each coming back once only to be put off again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from synchook.settings import Settings
from synchook.timeutil import utcnow
from webhooks.delivery.prepare import slow_waves
from webhooks.delivery.runtime import Runtime


@pytest.fixture
def runtime() -> Runtime:
    return Runtime(Settings(per_subscription_concurrency=2, delivery_timeout=2.0))


@pytest.mark.parametrize("mixed", [True, False])
async def test_slow_deliveries_go_to_their_waves(runtime: Runtime, mixed: bool) -> None:
    runtime.mark_slow("sub_slow")
    runtime.in_flight["sub_slow"] = 1  # one of its 2 slots busy: 1 free now
    healthy = ["sub_ok"] * 3 if mixed else []
    slow = ["sub_slow"] * 5
    now = utcnow()
    waves = slow_waves(runtime, healthy + slow, now=now)

    assert [waves.get(i) for i in range(len(healthy))] == [None] * len(healthy)
    seconds = [
        None if (i + len(healthy)) not in waves else (waves[i + len(healthy)] - now) / timedelta(seconds=1)
        for i in range(len(slow))
    ]
    # The free slot: sent by a job of slow ones only, handed back at once from a mixed one.
    assert seconds[0] == (0.0 if mixed else None)
    # The rest, 2 per timeout (2 s) after it, whichever job they were in.
    assert seconds[1:] == [2.0, 2.0, 4.0, 4.0]


async def test_looking_at_a_slow_endpoint_leaves_no_entry_in_flight(runtime: Runtime) -> None:
    # in_flight is a defaultdict: reading a key adds it, and only a send's end takes it out again. A slow endpoint
    # whose deliveries were all put off never has that send, so its entry stayed for the worker's life: one per
    # slow endpoint ever seen.
    runtime.mark_slow("sub_slow")
    slow_waves(runtime, ["sub_ok", "sub_slow", "sub_slow"], now=utcnow())

    assert "sub_slow" not in runtime.in_flight
