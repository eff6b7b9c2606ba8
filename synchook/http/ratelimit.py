"""Rate-limit state for the X-RateLimit-* headers, and the per-key API limiter (Redis fixed window)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from synchook.errors import RateLimited

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_at: float  # Unix seconds

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }

    def exceeded(self, message: str) -> RateLimited:
        retry_after = max(1, math.ceil(self.reset_at - time.time()))
        return RateLimited(message, headers={**self.headers(), "Retry-After": str(retry_after)})


async def hit_api_limit(redis: Redis | None, *, key_id: str, per_minute: int) -> RateLimitState:
    window = int(time.time() // 60)
    reset_at = (window + 1) * 60
    if redis is None:
        return RateLimitState(per_minute, per_minute, reset_at)
    name = f"synchook:ratelimit:api:{key_id}:{window}"
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, 120)
            count, _ = await pipe.execute()
    except Exception as exc:  # the API stays up when Redis is down; the limiter fails open
        logger.warning("api rate limiter unavailable: %s", type(exc).__name__)
        return RateLimitState(per_minute, per_minute, reset_at)
    state = RateLimitState(per_minute, per_minute - int(count), reset_at)
    if int(count) > per_minute:
        raise state.exceeded(f"Too many requests: {per_minute} per minute per key")
    return state
