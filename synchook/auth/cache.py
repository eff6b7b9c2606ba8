"""API keys this process looked up a moment ago, valid for as long as Redis says no key was revoked since.

Every /v1 request looked its key up in the database: on a GET that was half of the database work and a
quarter of the API's CPU. A key found valid is kept here, under the SHA-256 of the key (the raw key is never
kept), with the *revocation epoch* read from Redis before the lookup. Revoking a key (`synchook keys revoke`)
commits and then gives the epoch a new random value (:func:`announce_revocation`); every request reads the
epoch in the same script that counts its rate-limit hit, so after a revocation every process looks every key
up again, and the revoked one is refused from its next request on.

What keeps that provable:
- the epoch stored with an entry is the one read *before* the lookup, so a revocation committed after the
  lookup always changes it, whatever the order of the two Redis calls;
- the epoch is a fresh random value, never a counter: a Redis restart or FLUSHALL that loses it (and then a
  new revocation) can never bring back a value an entry was stored under;
- no Redis, or Redis failing (the rate limiter then fails open): nothing is served from here, every request
  looks its key up, as before;
- an entry lives at most :data:`KEY_CACHE_SECONDS` whatever Redis says, which bounds a revocation that could
  not be announced (Redis unreachable from where it was made, or an `UPDATE api_keys` by hand);
- expiry (`expires_at`) is checked on every request, from the stored value.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from synchook.auth.models import Principal
from synchook.timeutil import utcnow

logger = logging.getLogger(__name__)

# The Redis key holding the current revocation epoch (a random hex string; absent until the first revocation).
EPOCH_KEY = "synchook:auth:revocation-epoch"
# What an absent epoch reads as: any value a revocation sets differs from it.
NO_EPOCH = ""
# The longest an entry is used without a database lookup, even if no revocation was announced.
KEY_CACHE_SECONDS = 2.0
# Keys kept at most; past it the whole map starts over (a few lookups each, not a memory leak per key seen).
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class CachedKey:
    principal: Principal
    expires_at: datetime | None
    epoch: str
    until: float  # time.monotonic() after which the entry is not used

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


class KeyCache:
    """Valid keys by the SHA-256 of the key; one per process (`AppContext.keys`)."""

    def __init__(self, *, seconds: float = KEY_CACHE_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[str, CachedKey] = {}

    def get(self, key_hash: str) -> CachedKey | None:
        entry = self._entries.get(key_hash)
        if entry is not None and time.monotonic() >= entry.until:
            del self._entries[key_hash]
            return None
        return entry

    def put(self, key_hash: str, principal: Principal, *, expires_at: datetime | None, epoch: str) -> None:
        if self.seconds <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = CachedKey(principal, expires_at, epoch, time.monotonic() + self.seconds)

    def drop(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def __len__(self) -> int:
        return len(self._entries)


async def read_epoch(redis: Redis | None) -> str | None:
    """The current revocation epoch, or None when Redis cannot say (then nothing may be cached)."""
    if redis is None:
        return None
    try:
        value = await redis.get(EPOCH_KEY)
    except Exception as exc:
        logger.warning("key cache: revocation epoch unavailable: %s", type(exc).__name__)
        return None
    return epoch_text(value)


def epoch_text(value: bytes | str | None) -> str:
    if value is None:
        return NO_EPOCH
    return value.decode() if isinstance(value, bytes) else str(value)


async def announce_revocation(redis: Redis) -> None:
    """After a revocation committed: every API process looks every key up again from its next request on."""
    await redis.set(EPOCH_KEY, uuid.uuid4().hex)
