"""arq's worker, reading the queue and starting the jobs of one poll in one round trip to Redis.

arq starts each job it reads from the queue with WATCH on its in-progress key, EXISTS, ZSCORE, then
MULTI/PSETEX/EXEC: four round trips, and with two workers polling the same queue head, both pay them for
every job, one of them for nothing. A deliver or relay job of a few deliveries (a steady trickle of events,
scenario (b) of the bench) then spent as much of the worker's time starting jobs (17 % of its samples) as
sending webhooks. Here one script reads the queue head (arq's ZRANGEBYSCORE, which sent up to 1,000 ids
to the worker every 5 ms), does the same checks and sets the same key for every job a poll can take,
atomically (Redis runs a script alone), and returns the ones this worker started; running them is arq's
own ``run_job``, unchanged.
"""

from __future__ import annotations

from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

__all__ = ["QueueWorker"]

# KEYS: the queue; ARGV: now (ms), the in-progress TTL (ms), how many to start at most, the in-progress key
# prefix, where to start reading the queue and how many ids to read (arq's queue_read_limit). Reads the due ids
# at the queue head, in order, and starts each where arq would: not in progress (jobs in progress stay at the
# head until they end, and arq paid three round trips to skip each), due; up to the limit.
_START_JOBS = """
local now, limit, prefix = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', ARGV[5], ARGV[6])
local started = {}
for i = 1, #ids, 2 do
  if #started >= 2 * limit then break end
  local key = prefix .. ids[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('PSETEX', key, ARGV[2], '1')
    started[#started + 1] = ids[i]
    started[#started + 1] = ids[i + 1]
  end
end
return started
"""


class QueueWorker(Worker):
    """arq's ``Worker`` with a ``start_jobs`` of one Redis call per poll (see the module's doc)."""

    _start_script: Any = None

    async def _poll_iteration(self) -> None:
        """arq's own (arq 0.28), with the read of the queue head and the start of its jobs in one script call."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            burst_jobs_remaining = self.max_burst_jobs - self._jobs_started()
            if burst_jobs_remaining < 1:
                return
            count = min(burst_jobs_remaining, count)
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
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
        for job_id, score in await self._start(free, count):
            # A slot is free (counted above): this never waits, as in arq's own loop.
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _start(self, limit: int, count: int) -> list[tuple[str, int]]:
        """Mark up to ``limit`` due jobs in progress, where arq would; the ones marked, with their scores."""
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
        return [(reply[i].decode(), int(float(reply[i + 1]))) for i in range(0, len(reply), 2)]
