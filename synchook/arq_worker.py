"""arq's worker, reading the queue and starting the jobs of one poll in one round trip to Redis.

arq starts each job it reads from the queue with WATCH on its in-progress key, EXISTS, ZSCORE, then
MULTI/PSETEX/EXEC: four round trips, and with two workers polling the same queue head, both pay them for
every job, one of them for nothing. A deliver or relay job of a few deliveries (a steady trickle of events,
scenario (b) of the bench) then spent as much of the worker's time starting jobs (17 % of its samples) as
sending webhooks. Here one script reads the queue head (arq's ZRANGEBYSCORE, which sent up to 1,000 ids
to the worker every 5 ms), does the same checks and sets the same key for every job a poll can take,
atomically (Redis runs a script alone), and returns the ones this worker started; running them is arq's
own ``run_job``, unchanged.

Between polls a worker with nothing left to start waits for the queue's doorbell (synchook.doorbell) instead of
arq's fixed ``poll_delay``: the script also says when to look again (now, if due jobs were left for want of a
free slot; else the first deferred job's due time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from arq.connections import create_pool, log_redis_info
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from synchook.doorbell import IDLE_WAIT, Doorbell

__all__ = ["QueueWorker"]

logger = logging.getLogger("arq.worker")

# KEYS: the queue; ARGV: now (ms), the in-progress TTL (ms), how many to start at most, the in-progress key
# prefix, where to start reading the queue and how many ids to read (arq's queue_read_limit). Reads the due ids
# at the queue head, in order, and starts each where arq would: not in progress (jobs in progress stay at the
# head until they end, and arq paid three round trips to skip each), due; up to the limit. Returns the started
# ids with their scores, then when to look again: "0" if due jobs were left (the limit, or a full read), else
# the score of the first job not yet due, else "-1".
_START_JOBS = """
local now, limit, prefix = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', ARGV[5], ARGV[6])
local started = {}
local left = #ids >= 2 * tonumber(ARGV[6])
for i = 1, #ids, 2 do
  local key = prefix .. ids[i]
  if redis.call('EXISTS', key) == 0 then
    if #started >= 2 * limit then
      left = true
      break
    end
    redis.call('PSETEX', key, ARGV[2], '1')
    started[#started + 1] = ids[i]
    started[#started + 1] = ids[i + 1]
  end
end
local next_due = '-1'
if left then
  next_due = '0'
else
  local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #later > 0 then next_due = later[2] end
end
started[#started + 1] = next_due
return started
"""


class QueueWorker(Worker):
    """arq's ``Worker`` with a ``start_jobs`` of one Redis call per poll and a doorbell (see the module's doc)."""

    _start_script: Any = None
    _doorbell: Doorbell | None = None
    # From the last poll, in ms since the epoch: when a job is due next (0: some are due now, -1: none queued).
    _next_due_ms: int = -1
    # Whether the last poll found every slot taken (and so did not look at the queue): a job's end is then worth a
    # look. Otherwise it is not: a job enqueued meanwhile rang, and looking after every job was a third of the
    # worker's polls in a steady trickle of jobs (scenario (b) of the bench), one script call each.
    _full: bool = False

    async def main(self) -> None:
        """arq's own (arq 0.28), its poll every ``poll_delay`` kept for burst runs and for a busy worker only."""
        if self.burst:
            await super().main()
            return
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        logger.info("Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._doorbell = doorbell = Doorbell(self.pool)
        doorbell.start()
        try:
            while True:
                polled_at = time.monotonic()
                doorbell.rung.clear()  # a ring from here on means a look after this one
                await self._poll_iteration()
                # Never closer than arq's poll_delay: under load the doorbell rings all the time.
                await asyncio.sleep(max(0.0, self.poll_delay_s - (time.monotonic() - polled_at)))
                if self._next_due_ms != 0:
                    await doorbell.wait(self._idle_wait())
        finally:
            await doorbell.close()

    def _idle_wait(self) -> float:
        """Until the first deferred job is due, at most ``IDLE_WAIT``."""
        if self._next_due_ms < 0:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, self._next_due_ms / 1000 - time.time()))

    def _job_ended(self) -> None:
        self._release_sem_dec_counter_on_complete()
        if self._full and self._doorbell is not None:
            self._doorbell.rung.set()  # a slot is free: jobs that may have come while none was can start

    async def _poll_iteration(self) -> None:
        """arq's own (arq 0.28), with the read of the queue head and the start of its jobs in one script call."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            burst_jobs_remaining = self.max_burst_jobs - self._jobs_started()
            if burst_jobs_remaining < 1:
                return
            count = min(burst_jobs_remaining, count)
        self._full = self.job_counter >= self.max_jobs
        if self.allow_pick_jobs and not self._full:
            await self._start_due(count)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # required to make sure errors in run_job get propagated (arq's words)
        await self.heart_beat()

    async def _start_due(self, count: int) -> None:
        free = self.max_jobs - self.job_counter
        started, self._next_due_ms = await self._start(free, count)
        for job_id, score in started:
            # A slot is free (counted above): this never waits, as in arq's own loop.
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._job_ended())
            self.tasks[job_id] = task

    async def _start(self, limit: int, count: int) -> tuple[list[tuple[str, int]], int]:
        """Mark up to ``limit`` due jobs in progress, where arq would; the ones marked, with their scores, and when
        a job is due next (ms since the epoch; 0: due jobs were left, -1: none is queued)."""
        if self._start_script is None:
            self._start_script = self.pool.register_script(_START_JOBS)
        reply = await self._start_script(
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                limit,
                in_progress_key_prefix,
                self._queue_read_offset,
                count,
            ],
        )
        *pairs, next_due = reply
        started = [(pairs[i].decode(), int(float(pairs[i + 1]))) for i in range(0, len(pairs), 2)]
        return started, int(float(next_due))
