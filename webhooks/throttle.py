"""Per-subscription ``rate_limit_per_second``, shared by every worker through Redis.

A GCRA-style schedule: Redis keeps, per subscription, the earliest time the next request may go
(on Redis' own clock, so workers on other hosts need not agree on the time). A batch reserves
send slots spaced ``1/limit`` apart; slots further out than ``max_wait`` are not reserved and those
deliveries are deferred instead (no attempt recorded, none of the schedule consumed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

__all__ = ["Reservation", "admit", "reserve"]

KEY_PREFIX = "synchook:ratelimit:"
# Slots are spaced 10% wider than 1/limit: a send delayed by a busy event loop (up to ~100 ms) must still not
# show a receiver limit+1 requests in one second. The limit is a ceiling, so erring below it is correct.
SPACING_MARGIN = 1.1

_RESERVE = """
local interval = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local first = tat - now
local granted = 0
while granted < wanted and (tat - now) <= max_wait do
  tat = tat + interval
  granted = granted + 1
end
if granted > 0 then
  redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return {granted, string.format('%.6f', first), string.format('%.6f', tat - now)}
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """``granted`` slots at ``first_wait + i*interval`` seconds from now; the rest should wait ``next_wait``+."""

    granted: int
    first_wait: float
    next_wait: float
    interval: float

    def wait_for(self, index: int) -> float:
        """Seconds to wait before sending the ``index``-th request: granted ones sleep, others are deferred."""
        if index < self.granted:
            return self.first_wait + index * self.interval
        return self.next_wait + (index - self.granted) * self.interval


async def reserve(redis: Redis, subscription_id: str, *, limit: int, wanted: int, max_wait: float) -> Reservation:
    """Reserve up to ``wanted`` send slots no further than ``max_wait`` seconds ahead."""
    interval = SPACING_MARGIN / max(limit, 1)
    call = redis.eval(_RESERVE, 1, KEY_PREFIX + subscription_id, f"{interval:.6f}", str(wanted), f"{max_wait:.6f}")
    raw = await cast(Awaitable[list[Any]], call)
    granted, first, following = raw
    return Reservation(int(granted), float(first), float(following), interval)


# The last gate, at the moment of sending: at most ``limit`` sends in any window of SPACING_MARGIN seconds,
# counted in Redis across every worker. Reserved slots space the sends out; this gate keeps a send that
# was delayed past its slot (a stalled event loop, a busy semaphore) from bunching with the next ones.
_ADMIT = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return string.format('%.6f', tonumber(oldest[2]) + window - now)
"""


async def admit(redis: Redis, subscription_id: str, *, limit: int, member: str, max_wait: float) -> bool:
    """Wait until a send fits the subscription's window and record it; False if that is beyond ``max_wait``."""
    waited = 0.0
    while True:
        call = redis.eval(
            _ADMIT, 1, KEY_PREFIX + "sent:" + subscription_id, f"{SPACING_MARGIN:.6f}", str(limit), member
        )
        wait = float(await cast(Awaitable[Any], call))
        if wait <= 0:
            return True
        if waited + wait > max_wait:
            return False
        await asyncio.sleep(wait + 0.001)
        waited += wait
