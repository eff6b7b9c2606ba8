"""Rate-limit state for the X-RateLimit-* headers, and the per-key API limiter (Redis fixed window)."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from synchook.auth.cache import EPOCH_KEY, epoch_text
from synchook.errors import RateLimited
from synchook.pipelined import PipelinedRedis

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


async def hit_api_limit(hits: HitCounter | None, *, key_id: str, per_minute: int) -> RateLimitState:
    """Count a request of the key; RateLimited past ``per_minute`` in this minute."""
    state, _ = await count_api_hit(hits, key_id=key_id, per_minute=per_minute)
    if state.remaining < 0:
        raise state.exceeded(f"Too many requests: {per_minute} per minute per key")
    return state


async def count_api_hit(hits: HitCounter | None, *, key_id: str, per_minute: int) -> tuple[RateLimitState, str | None]:
    """Count a request of the key, and read the API keys' revocation epoch in the same command.

    The state's ``remaining`` is negative past the limit (the caller refuses once it knows the key is valid). The
    epoch (synchook.auth.cache) is None when Redis could not be asked: nothing may then be served from the cache.
    """
    window = int(time.time() // 60)
    reset_at = (window + 1) * 60
    if hits is None:
        return RateLimitState(per_minute, per_minute, reset_at), None
    try:
        count, epoch = await hits.count(f"synchook:ratelimit:api:{key_id}:{window}")
    except Exception as exc:
        return _fail_open(exc, per_minute, reset_at), None
    return RateLimitState(per_minute, per_minute - int(count), reset_at), epoch_text(epoch)


class HitCounter(PipelinedRedis):
    """The API process's pipelined Redis connection (synchook.pipelined), counting the per-key rate limit: one
    command a request, the hit and the revocation epoch."""

    async def count(self, name: str) -> tuple[int, bytes | str | None]:
        """INCR the window ``name`` (EXPIRE at its first hit) and read the revocation epoch: one command."""
        count, epoch = await self.call(_packed(name, script=False), unscripted=_packed(name, script=True))
        return int(count), epoch


def _fail_open(exc: Exception, per_minute: int, reset_at: float) -> RateLimitState:
    # The API stays up when Redis is down; the limiter fails open.
    logger.warning("api rate limiter unavailable: %s", type(exc).__name__)
    return RateLimitState(per_minute, per_minute, reset_at)


# Count a hit in the key's window and give the window its expiry at its first hit: one command (EVALSHA), where a
# MULTI of INCR and EXPIRE was four commands to send and four answers to parse on every API request. The window is
# in the key's name, so 120 s from its first hit outlives it. It also answers the keys' revocation epoch (KEYS[2],
# '' while there is none), which decides whether a key looked up a moment ago may be used again without a lookup.
_COUNT_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 120) end
return {n, redis.call('GET', KEYS[2]) or ''}
"""
_COUNT_HIT_SHA1 = hashlib.sha1(_COUNT_HIT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# EVALSHA <sha1> 2 <window> <epoch key> in Redis' protocol (RESP): what redis-py's pack_command builds from the
# same arguments, with only the window's name encoded per request.
_EVALSHA_HEAD = b"*5\r\n" + _bulk(b"EVALSHA") + _bulk(_COUNT_HIT_SHA1.encode()) + _bulk(b"2")
_EVAL_HEAD = b"*5\r\n" + _bulk(b"EVAL") + _bulk(_COUNT_HIT.encode()) + _bulk(b"2")
_EPOCH_TAIL = _bulk(EPOCH_KEY.encode())


def _packed(name: str, *, script: bool) -> bytes:
    return (_EVAL_HEAD if script else _EVALSHA_HEAD) + _bulk(name.encode()) + _EPOCH_TAIL
