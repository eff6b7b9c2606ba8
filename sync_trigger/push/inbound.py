"""Inbound provider notifications (CONTRACT §7): who sent them (a known channel with its secret), and a per-source
budget for the ones that are not, so forged notifications cannot turn into database load.

Nothing here logs a channel token or clientState, nor puts one in an error message.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from arq.connections import ArqRedis
from sqlalchemy import select
from sqlmodel import col

from sync_trigger.push.models import PushChannel
from synchook.crypto import DecryptionError, SecretBox
from synchook.db import Database
from synchook.errors import DomainError, RateLimited
from synchook.metrics import record_push_notification
from synchook.queue import REDIS_LOST

logger = logging.getLogger(__name__)

# CONTRACT §7: bodies over 1 MiB are refused (413) whatever SYNCHOOK_MAX_BODY_BYTES says for the API.
MAX_NOTIFICATION_BYTES = 1_048_576
# A source address may send this many rejected notifications (unknown channel, wrong secret, malformed) per
# minute; past it, every notification from it is answered 429 before any database look-up, until the minute
# ends: a forger costs at most 10 indexed look-ups a second per address (per /64 for IPv6). Valid notifications
# never spend it, so Google's and Microsoft's senders, which carry every channel's traffic from a few addresses,
# are not slowed by a busy minute. Their own rejections are late notifications of channels we stopped at a
# renewal ("unknown"): the budget leaves room for a burst of renewals many times over.
REJECTED_PER_MINUTE = 600
_WINDOW = 60
_REJECTED_PREFIX = "synchook:push:rejected:"
# Graph's validation tokens are short; an echo is bounded all the same.
MAX_VALIDATION_TOKEN = 1024


class BadNotification(DomainError):
    """A notification that is not one: missing headers, malformed JSON (400, CONTRACT §7)."""

    code = "validation_error"
    status = 400


@dataclass(frozen=True, slots=True)
class KnownChannel:
    calendar_id: str
    provider: str


def source_of(host: str | None) -> str:
    """The budget's key for a client address: the address, or its /64 for IPv6 (one host holds a whole /64)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


def _budget_key(source: str, window: int) -> str:
    return f"{_REJECTED_PREFIX}{source}:{window}"


async def check_budget(redis: ArqRedis | None, source: str, *, provider: str) -> None:
    """Raise 429 when `source` has spent its rejected-notification budget for this minute.

    Fails open when Redis is unreachable: the notification then fails on its own later (503).
    """
    if redis is None:
        return
    window = int(time.time() // _WINDOW)
    try:
        spent = await redis.get(_budget_key(source, window))
    except REDIS_LOST:
        return
    if spent is not None and int(spent) >= REJECTED_PER_MINUTE:
        record_push_notification(provider, "rate_limited")
        retry_after = max(1, math.ceil((window + 1) * _WINDOW - time.time()))
        raise RateLimited(
            f"Too many rejected notifications from this address: {REJECTED_PER_MINUTE} per minute",
            headers={"Retry-After": str(retry_after)},
        )


async def spend_budget(redis: ArqRedis | None, source: str, count: int = 1) -> None:
    """Count `count` rejected notifications of `source` against its budget (best effort)."""
    if redis is None or count <= 0:
        return
    name = _budget_key(source, int(time.time() // _WINDOW))
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, count)
            pipe.expire(name, _WINDOW * 2)
            await pipe.execute()
    except REDIS_LOST as exc:
        logger.warning("push notification budget not recorded: %s", type(exc).__name__)


class ChannelCache:
    """Channels recently found, per process, for `CACHE_SECONDS`: a storm of notifications for one calendar (a
    provider may send hundreds a second) costs one database look-up, not one each (on SQLite each look-up would
    queue for the write lock behind the workers).

    Only channels that exist are kept, and every notification still proves its secret against the cached row. A
    stale entry can only accept notifications of a channel stopped or replaced within the last seconds, which
    schedule at most a harmless sync, as the provider's own late notifications after a stop would.
    """

    CACHE_SECONDS = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[float, PushChannel]] = {}

    def get(self, provider: str, channel_id: str) -> PushChannel | None:
        entry = self._rows.get((provider, channel_id))
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.CACHE_SECONDS:
            del self._rows[(provider, channel_id)]
            return None
        return entry[1]

    def put(self, provider: str, channels: dict[str, PushChannel]) -> None:
        if len(self._rows) + len(channels) > self.MAX_ENTRIES:
            self._rows.clear()  # bounded memory; the next look-ups refill it
        now = time.monotonic()
        for channel_id, channel in channels.items():
            self._rows[(provider, channel_id)] = (now, channel)

    def clear(self) -> None:
        self._rows.clear()


CHANNELS = ChannelCache()


async def find_channels(db: Database, *, provider: str, channel_ids: Sequence[str]) -> dict[str, PushChannel]:
    """The channels of `provider` named by `channel_ids` (Google channel ids, Graph subscription ids), by id."""
    wanted = sorted({c for c in channel_ids if c and len(c) <= 128})
    found: dict[str, PushChannel] = {}
    for channel_id in wanted:
        cached = CHANNELS.get(provider, channel_id)
        if cached is not None:
            found[channel_id] = cached
    missing = [c for c in wanted if c not in found]
    if not missing:
        return found
    async with db.session() as session:
        rows = await session.execute(
            select(PushChannel).where(col(PushChannel.provider) == provider, col(PushChannel.channel_id).in_(missing))
        )
        loaded = {str(channel.channel_id): channel for channel in rows.scalars()}
    CHANNELS.put(provider, loaded)
    return found | loaded


def secret_matches(box: SecretBox, channel: PushChannel, supplied: str | None) -> bool:
    """Constant-time comparison of the supplied token/clientState with the channel's sealed one."""
    if supplied is None or channel.secret_sealed is None:
        return False
    try:
        expected = box.open(channel.secret_sealed, context=channel.calendar_id)
    except DecryptionError:
        # Our key, not the sender: this process lacks the key that sealed it. Refused like a wrong secret.
        logger.warning("push channel of calendar %s: secret cannot be opened", channel.calendar_id)
        return False
    return hmac.compare_digest(supplied.encode(), expected.encode())
