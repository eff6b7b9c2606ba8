"""Rate-limit state for the X-RateLimit-* headers, and the per-key API limiter (Redis fixed window)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from synchook.auth.cache import EPOCH_KEY, epoch_text
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


class HitCounter:
    """Runs the count-hit script for every request of this process over one Redis connection, pipelined.

    Through the client (``redis.evalsha``) the one command of every API request cost about a quarter of a one-row
    GET's CPU (155 µs of 650 in-process): the pool's lock (held across a loop turn, so concurrent requests queued
    on it), a read that probes each connection at checkout and is cancelled by a zero timeout, a task per command
    (``asyncio.wait_for`` around the write), retry and response-callback layers, and packing the arguments. Here
    the commands of the requests that arrive in the same turn of the loop go out in one write, their answers come
    back in order on the same connection and are read by one task (:class:`_Lane`): per request, a future. The
    connection is made with the client's own settings (host, credentials, database, TLS); each request waits at
    most the client's ``socket_timeout``. A connection that fails fails the requests waiting on it (they fail
    open, as before) and is replaced by the next request; a request whose connection had answered before and
    broke (Redis restarted) is sent once more on a new one, as the pool's check at checkout did.
    """

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self._timeout = float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT)
        kwargs["socket_timeout"] = None  # each request waits under self._timeout instead; the reader waits idle
        self._connect = functools.partial(pool.connection_class, **kwargs)
        self._lane: _Lane | None = None
        self._connecting = asyncio.Lock()
        self._attempts = 0
        self._failure: str | None = None  # the last connection attempt's error, while no connection works
        self._closed = False

    async def count(self, name: str) -> tuple[int, bytes | str | None]:
        """INCR the window ``name`` (EXPIRE at its first hit) and read the revocation epoch: one command."""
        lane: _Lane | None = None
        try:
            async with asyncio.timeout(self._timeout):
                lane = await self._open_lane()
                try:
                    reply = await self._call(lane, name)
                except RedisConnectionError:
                    if not lane.answered:
                        raise
                    # A connection that worked and broke (a Redis restart, CLIENT KILL): once more on a new one.
                    lane = await self._open_lane()
                    reply = await self._call(lane, name)
        except TimeoutError:
            if lane is not None:  # a connection that does not answer is given up, as redis-py does
                lane.fail(RedisConnectionError("the rate limiter's Redis did not answer in time"))
            raise
        count, epoch = reply
        return int(count), epoch

    async def _call(self, lane: _Lane, name: str) -> Any:
        try:
            return await lane.call(_packed(name, script=False))
        except NoScriptError:  # a Redis that has not seen the script yet (new, restarted, flushed)
            return await lane.call(_packed(name, script=True))

    async def _open_lane(self) -> _Lane:
        lane = self._lane
        if lane is not None and lane.broken is None:
            return lane
        attempts = self._attempts
        async with self._connecting:
            if self._closed:
                raise RedisConnectionError("the API's rate limiter is closed")
            if self._lane is not None and self._lane.broken is None:
                return self._lane
            if self._attempts != attempts and self._failure is not None:
                # The attempt made while this request waited failed: Redis is down; fail now, not one by one.
                raise RedisConnectionError(self._failure)
            self._attempts += 1
            connection = self._connect()
            try:
                await connection.connect()
            except BaseException as exc:
                self._failure = type(exc).__name__
                await connection.disconnect(nowait=True)
                raise
            self._failure = None
            self._lane = _Lane(connection)
            return self._lane

    async def close(self) -> None:
        self._closed = True
        if self._lane is not None:
            await self._lane.close()


class _Lane:
    """One connection: commands written in order, batched per turn of the loop; answers read in order by one task."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.answered = 0
        self.broken: BaseException | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._batch: list[bytes] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._sending: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def call(self, packed: bytes) -> Any:
        if self.broken is not None:
            raise RedisConnectionError("the rate limiter's Redis connection broke")
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # The command and its future are queued together (no await between): answers match commands in order.
        self._waiting.append(answer)
        self._batch.append(packed)
        if len(self._batch) == 1:
            await self._send_batch()
        return await answer

    async def _send_batch(self) -> None:
        # This request opened the batch: one turn of the loop lets the others of this turn join it, one write.
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            # Its request was cancelled (a client gone, a timeout): the others in the batch are still sent.
            self._sending = asyncio.get_running_loop().create_task(self._send(self._take_batch()))
            raise
        await self._send(self._take_batch())

    def _take_batch(self) -> bytes:
        batch, self._batch = self._batch, []
        return b"".join(batch)

    async def _send(self, commands: bytes) -> None:
        if self.broken is not None:
            return  # _break failed their futures already
        try:
            # The bytes are handed to the socket before the first await (redis-py writes, then drains).
            await self.connection.send_packed_command(commands, check_health=False)
        except BaseException as exc:
            self._break(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _read(self) -> None:
        try:
            while True:
                try:
                    reply: Any = await self.connection.read_response(disconnect_on_error=False)
                except ResponseError as exc:  # that command's answer (NOSCRIPT…), not the connection's end
                    reply = exc
                if not self._waiting:
                    raise RedisConnectionError("an answer to no command")
                answer = self._waiting.popleft()
                self.answered += 1
                if answer.done():  # its request timed out meanwhile
                    continue
                if isinstance(reply, ResponseError):
                    answer.set_exception(reply)
                else:
                    answer.set_result(reply)
        except asyncio.CancelledError:
            self._break(RedisConnectionError("the rate limiter's Redis connection was closed"))
            raise
        except BaseException as exc:
            self._break(exc)

    def fail(self, exc: RedisConnectionError) -> None:
        """Give the connection up: every request waiting on it fails with ``exc``."""
        self._break(exc)

    def _break(self, exc: BaseException, *, disconnect: bool = True) -> None:
        if self.broken is not None:
            return
        self.broken = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(type(exc).__name__)
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(self.broken)
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        if disconnect:
            self._closing = asyncio.get_running_loop().create_task(self.connection.disconnect(nowait=True))

    async def close(self) -> None:
        self._break(RedisConnectionError("the rate limiter was closed"), disconnect=False)
        with contextlib.suppress(BaseException):
            await self._reader
        await self.connection.disconnect(nowait=True)


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
# The client's socket_timeout when it has none: a Redis that does not answer must not hold a request.
DEFAULT_TIMEOUT = 5.0


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# EVALSHA <sha1> 2 <window> <epoch key> in Redis' protocol (RESP): what redis-py's pack_command builds from the
# same arguments, with only the window's name encoded per request.
_EVALSHA_HEAD = b"*5\r\n" + _bulk(b"EVALSHA") + _bulk(_COUNT_HIT_SHA1.encode()) + _bulk(b"2")
_EVAL_HEAD = b"*5\r\n" + _bulk(b"EVAL") + _bulk(_COUNT_HIT.encode()) + _bulk(b"2")
_EPOCH_TAIL = _bulk(EPOCH_KEY.encode())


def _packed(name: str, *, script: bool) -> bytes:
    return (_EVAL_HEAD if script else _EVALSHA_HEAD) + _bulk(name.encode()) + _EPOCH_TAIL
