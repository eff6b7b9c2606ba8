"""The per-key API limit counts through a Lua script run by its digest: a Redis that lost its scripts (restarted,
SCRIPT FLUSH) is sent the text once and the count goes on."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

from synchook.http.ratelimit import hit_api_limit


async def test_the_count_survives_a_script_flush(redis: ArqRedis) -> None:
    key_id = f"key_{uuid.uuid4().hex}"
    first = await hit_api_limit(redis, key_id=key_id, per_minute=10)
    await redis.script_flush()
    second = await hit_api_limit(redis, key_id=key_id, per_minute=10)
    if int(first.reset_at) != int(second.reset_at):
        return  # straddled a minute boundary: two windows
    assert (first.remaining, second.remaining) == (9, 8)
    name = f"synchook:ratelimit:api:{key_id}:{int(first.reset_at) // 60 - 1}"
    assert 0 < await redis.ttl(name) <= 120  # the window expires
