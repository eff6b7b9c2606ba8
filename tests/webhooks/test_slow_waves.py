"""A slow endpoint's deliveries in a batch are put off to when one of its slots can take them.

In a batch shared with healthy endpoints, only as many as the slow endpoint has free slots come
back at once (in a job of their own); the rest go straight to their wave, one timeout apart per
``per_subscription_concurrency``, instead of each coming back once only to be put off again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from synchook.settings import Settings
from synchook.timeutil import utcnow
from webhooks.attempts import Claimed
from webhooks.engine import Runtime, _isolate_slow


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    opened = Runtime.open(Settings(per_subscription_concurrency=2, delivery_timeout=2.0))
    yield opened
    await opened.close()


def _claimed(index: int, subscription_id: str) -> Claimed:
    return Claimed(f"dlv_{index:02d}", "ws_1", "evt_1", subscription_id, "pending", 0, 0, None, None)


@pytest.mark.parametrize("mixed", [True, False])
async def test_slow_deliveries_go_to_their_waves(runtime: Runtime, mixed: bool) -> None:
    runtime.mark_slow("sub_slow")
    runtime.in_flight["sub_slow"] = 1  # one of its 2 slots busy: 1 free now
    healthy = [_claimed(i, "sub_ok") for i in range(3)] if mixed else []
    slow = [_claimed(10 + i, "sub_slow") for i in range(5)]
    now = utcnow()
    _isolate_slow(runtime, healthy + slow, now=now)

    assert [c.defer_until for c in healthy] == [None] * len(healthy)
    waves = [None if c.defer_until is None else (c.defer_until - now) / timedelta(seconds=1) for c in slow]
    # The free slot: sent by a job of slow ones only, handed back at once from a mixed one.
    assert waves[0] == (0.0 if mixed else None)
    # The rest, 2 per timeout (2 s) after it, whichever job they were in.
    assert waves[1:] == [2.0, 2.0, 4.0, 4.0]
