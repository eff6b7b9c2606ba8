"""One Redis connection per API process, its commands pipelined (:class:`PipelinedRedis`), and RESP packing.

The per-key rate limit (synchook.http.ratelimit.HitCounter) counts every request on it; `POST /v1/calendar/sync`
and `POST /v1/webhooks/subscriptions/{id}/test` enqueue on it (synchook.enqueue), where redis-py's pool, its lock,
its checkout probe and a task per write cost 80-150 µs of CPU a request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["DEFAULT_TIMEOUT", "PipelinedRedis", "pack"]

# The client's socket_timeout when it has none: a Redis that does not answer must not hold a request.
DEFAULT_TIMEOUT = 5.0


def pack(*args: bytes | str | int) -> bytes:
    """A command in Redis' protocol (RESP), as redis-py's ``pack_command`` builds it from the same arguments."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bool):
            raise TypeError("a bool is not a Redis argument")  # redis-py refuses it too
        if isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int):
            value = b"%d" % arg
        else:
            value = arg
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class PipelinedRedis:
    """Commands of this process to ``redis`` over one connection, pipelined: the rate limit's and the enqueues'.

    Through the client (``redis.evalsha``) one command cost about a quarter of a one-row GET's CPU (155 µs of 650
    in-process): the pool's lock (held across a loop turn, so concurrent requests queued on it), a read that probes
    each connection at checkout and is cancelled by a zero timeout, a task per command (``asyncio.wait_for``
    around the write), retry and response-callback layers, and packing the arguments. Here the commands that
    arrive in the same turn of the loop go out in one write, their answers come back in order on the same
    connection and are read by one task (:class:`_Lane`): per command, a future. The connection is made with the
    client's own settings (host, credentials, database, TLS); each command waits at most the client's
    ``socket_timeout``. A connection that fails fails the commands waiting on it (their callers treat that as
    they treated the client's errors) and is replaced by the next command; a command whose connection had
    answered before and broke (Redis restarted) is sent once more on a new one, as the pool's check at checkout
    did: only commands that may run twice are sent here (a count that fails open anyway, enqueues that skip a
    taken job id).
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

    async def call(self, packed: bytes, *, unscripted: bytes | None = None) -> Any:
        """Send one command packed by :func:`pack` and return its answer (a Redis error answer is raised).

        ``unscripted``: for an EVALSHA, the same command as EVAL with the script's text, sent if Redis answers
        NOSCRIPT (a Redis that has not seen the script yet: new, restarted, flushed)."""
        lane: _Lane | None = None
        try:
            async with asyncio.timeout(self._timeout):
                lane = await self._open_lane()
                try:
                    return await self._send(lane, packed, unscripted)
                except RedisConnectionError:
                    if not lane.answered:
                        raise
                    # A connection that worked and broke (a Redis restart, CLIENT KILL): once more on a new one.
                    lane = await self._open_lane()
                    return await self._send(lane, packed, unscripted)
        except TimeoutError:
            if lane is not None:  # a connection that does not answer is given up, as redis-py does
                lane.fail(RedisConnectionError("Redis did not answer the API in time"))
            raise

    async def _send(self, lane: _Lane, packed: bytes, unscripted: bytes | None) -> Any:
        try:
            return await lane.call(packed)
        except NoScriptError:
            if unscripted is None:
                raise
            return await lane.call(unscripted)

    async def _open_lane(self) -> _Lane:
        lane = self._lane
        if lane is not None and lane.broken is None:
            return lane
        attempts = self._attempts
        async with self._connecting:
            if self._closed:
                raise RedisConnectionError("the API's pipelined Redis connection is closed")
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
            raise RedisConnectionError("the API's pipelined Redis connection broke")
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
            # Its caller was cancelled (a client gone, a timeout): the others in the batch are still sent.
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
            self._break(RedisConnectionError("the API's pipelined Redis connection was closed"))
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
        self._break(RedisConnectionError("the API's pipelined Redis connection was closed"), disconnect=False)
        with contextlib.suppress(BaseException):
            await self._reader
        await self.connection.disconnect(nowait=True)
