"""Worker liveness, and the janitor that hands a dead worker's jobs back to the queue.

arq marks a started job with ``arq:in-progress:<id>`` for the longest function timeout + 10 s (30 min
with the default sync timeout) and only its own worker deletes it. A SIGKILLed worker's jobs therefore
stay at the head of the queue, skipped by every other worker until the key expires. So each worker
beats a short-lived key and records which jobs it runs; the janitor (one worker at a time, cluster-wide)
deletes the in-progress key of a due job whose owner stopped beating, and arq runs the job again.

Running a job again is safe: every job is idempotent against the database (deliver jobs claim rows
under a lease, the relay claims undispatched events, a sync job resumes the job it finds running).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob
from arq.worker import Function

from synchook.queue import KEY_PREFIX, REDIS_LOST, due_job_ids

__all__ = ["Liveness", "free_stale_jobs", "live_workers", "new_worker_id"]

logger = logging.getLogger(__name__)

J = TypeVar("J", Function, CronJob)

WORKER_KEY_PREFIX = KEY_PREFIX + "worker:"
JOB_OWNER_KEY_PREFIX = KEY_PREFIX + "job-owner:"
JANITOR_LOCK_KEY = KEY_PREFIX + "janitor"

HEARTBEAT_INTERVAL = 1.0
# Several missed beats before a worker counts as dead: an event loop busy for a moment is not a death,
# and freeing a live worker's job runs it twice (harmless, but wasted work).
HEARTBEAT_TTL = 6.0
# The lock is never released, only left to expire: it also spaces the janitor's runs cluster-wide.
JANITOR_INTERVAL = 2.0
# Due ids examined per run; each costs two reads in one pipeline.
JANITOR_SCAN = 1000
# arq sets the in-progress key a moment before the job itself records its owner: a job without an
# owner is only a dead worker's once its key is clearly older than that moment.
OWNERLESS_GRACE = 30.0

# Atomically, so a job started again meanwhile (new in-progress key, new owner) is never touched:
# KEYS in-progress, owner, owner's heartbeat; ARGV the owner seen ("" for none), the PTTL seen.
_RELEASE = """
local owner = redis.call('GET', KEYS[2]) or ''
if owner ~= ARGV[1] then return 0 end
if owner ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 or ttl > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


# KEYS owner records of jobs this worker ran to their end; ARGV this worker's id. Deletes those still naming it (a
# job run again meanwhile by another worker has that worker's record, which stays).
_FORGET = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def new_worker_id() -> str:
    # Readable in logs and Redis (host, pid), unique across restarts of the same pid (the suffix).
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Liveness:
    """One worker's heartbeat and the ownership of its jobs, plus its turns at the janitor."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        # arq computes it from the functions it is given: the worker sets it once built.
        self.in_progress_timeout_s = 0.0
        self._task: asyncio.Task[None] | None = None
        # Jobs run to their end whose owner records are to delete, in the round trip of the next job's record (or
        # of the next beat); and those being deleted, by the write that carries them.
        self._ended: set[str] = set()
        self._forgetting: dict[str, asyncio.Future[None]] = {}

    @property
    def heartbeat_key(self) -> str:
        return WORKER_KEY_PREFIX + self.worker_id

    async def start(self, redis: ArqRedis) -> None:
        # Beat before the first job can start, so no other janitor ever sees this worker's jobs unowned.
        await self._write(redis)
        self._task = asyncio.create_task(self._run(redis), name=f"liveness {self.worker_id}")

    async def stop(self, redis: ArqRedis) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(*REDIS_LOST):
            if self._ended:
                await self._write(redis)  # the last jobs' records
            await redis.delete(self.heartbeat_key)

    def owned(self, job: J) -> J:
        """The same arq function or cron job, each run recorded as this worker's while it lasts."""
        run = job.coroutine

        @functools.wraps(run)
        async def owned_run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            redis: ArqRedis = ctx["redis"]
            job_id: str = ctx["job_id"]
            try:
                await self._write(redis, owner_of=job_id)
            except REDIS_LOST as exc:
                # Unowned, the job could be freed while it runs, and run twice: run it once Redis answers.
                raise Retry(defer=1) from exc
            try:
                return await run(ctx, *args, **kwargs)
            finally:
                # Deleted by the next write (a job's start or the beat): a round trip less per job. A record left over
                # meanwhile (or for good, if Redis is lost) names a job no longer in progress, which the janitor
                # skips, and expires with the in-progress timeout.
                self._ended.add(job_id)

        # Inside the job's own coroutine, not arq's on_job_start/on_job_end hooks: arq catches a
        # cancellation (worker shutdown) there and queues the job again; in a hook it escapes the worker.
        return dataclasses.replace(job, coroutine=owned_run)

    async def _write(self, redis: ArqRedis, *, owner_of: str | None = None) -> None:
        """One round trip: delete the records of the jobs ended since the last write, record ``owner_of``'s, beat."""
        if owner_of is not None:
            forgetting = self._forgetting.get(owner_of)
            if forgetting is not None:
                # Run again here while a write deletes its last record: that delete lands first, on whichever
                # connection, or it would delete the new one.
                await asyncio.wait([forgetting])
            self._ended.discard(owner_of)
        ended, self._ended = sorted(self._ended), set()
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._forgetting.update(dict.fromkeys(ended, written))
        try:
            async with redis.pipeline(transaction=False) as pipe:
                if ended:
                    # EVAL, not a registered script: a pipeline holding one first asks Redis whether it has it.
                    pipe.eval(_FORGET, len(ended), *(JOB_OWNER_KEY_PREFIX + job_id for job_id in ended), self.worker_id)
                if owner_of is not None:
                    # Until the in-progress key would expire: the record outlives no run it could describe.
                    pipe.set(JOB_OWNER_KEY_PREFIX + owner_of, self.worker_id, px=int(self.in_progress_timeout_s * 1000))
                # With every record a beat too: Redis may have been flushed since the last one, and an owner without a
                # heartbeat is a dead worker's.
                pipe.set(self.heartbeat_key, b"1", px=int(HEARTBEAT_TTL * 1000))
                await pipe.execute()
        except BaseException:
            self._ended.update(ended)  # deleted by a later write
            raise
        finally:
            for job_id in ended:
                if self._forgetting.get(job_id) is written:
                    del self._forgetting[job_id]
            written.set_result(None)

    async def _run(self, redis: ArqRedis) -> None:
        next_sweep = 0.0
        failing = False
        while True:
            try:
                await self._write(redis)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + JANITOR_INTERVAL
                    await self._sweep(redis)
                if failing:
                    logger.info("worker heartbeat restored")
                    failing = False
            except REDIS_LOST as exc:
                # The worker rides out Redis outages (run_worker rebuilds arq's loop); so does this task.
                if not failing:
                    logger.warning("worker heartbeat failed (%s); retrying", type(exc).__name__)
                    failing = True
            except Exception:
                # A bug here must not stop the heartbeat: this worker's jobs would be freed while they run.
                logger.exception("janitor run failed")
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _sweep(self, redis: ArqRedis) -> None:
        if not await redis.set(JANITOR_LOCK_KEY, self.worker_id, nx=True, px=int(JANITOR_INTERVAL * 1000)):
            return  # another worker's turn
        freed = await free_stale_jobs(redis, in_progress_timeout_s=self.in_progress_timeout_s)
        if freed:
            logger.warning("janitor freed %d job(s) of dead workers for the queue", len(freed))


async def live_workers(redis: ArqRedis, worker_ids: Iterable[str]) -> set[str]:
    """The workers among `worker_ids` whose heartbeat is current (a stopped or killed one's has expired)."""
    wanted = sorted(set(worker_ids))
    if not wanted:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for worker_id in wanted:
            pipe.exists(WORKER_KEY_PREFIX + worker_id)
        return {worker_id for worker_id, alive in zip(wanted, await pipe.execute(), strict=True) if alive}


async def free_stale_jobs(redis: ArqRedis, *, in_progress_timeout_s: float, scan: int = JANITOR_SCAN) -> list[str]:
    """Delete the in-progress marks of due jobs whose worker is dead, so arq runs them again; returns their ids."""
    ids = await due_job_ids(redis, limit=scan)
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.pttl(in_progress_key_prefix + job_id)
            pipe.get(JOB_OWNER_KEY_PREFIX + job_id)
        replies = await pipe.execute()
    # PTTL: -2 no key (waiting for a worker), -1 no expiry, else milliseconds left.
    started = [
        (job_id, int(pttl), owner.decode() if owner is not None else "")
        for job_id, pttl, owner in zip(ids, replies[0::2], replies[1::2], strict=True)
        if pttl != -2
    ]
    owners = sorted({owner for _, _, owner in started if owner})
    alive: set[str] = set()
    if owners:
        async with redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(WORKER_KEY_PREFIX + owner)
            alive = {owner for owner, beating in zip(owners, await pipe.execute(), strict=True) if beating}
    timeout_ms = int(in_progress_timeout_s * 1000)
    stale = [
        (job_id, pttl, owner)
        for job_id, pttl, owner in started
        if (owner and owner not in alive) or (not owner and (pttl == -1 or timeout_ms - pttl >= OWNERLESS_GRACE * 1000))
    ]
    if not stale:
        return []
    release = redis.register_script(_RELEASE)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, pttl, owner in stale:
            keys = [in_progress_key_prefix + job_id, JOB_OWNER_KEY_PREFIX + job_id, WORKER_KEY_PREFIX + owner]
            await release(keys=keys, args=[owner, pttl], client=pipe)
        done = await pipe.execute()
    return [job_id for (job_id, _, _), freed in zip(stale, done, strict=True) if freed]
