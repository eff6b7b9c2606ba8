"""arq's worker, starting the jobs of one poll in one round trip to Redis instead of four per job.

arq starts each job it reads from the queue with WATCH on its in-progress key, EXISTS, ZSCORE, then
MULTI/PSETEX/EXEC: four round trips, and with two workers polling the same queue head, both pay them for
every job, one of them for nothing. A deliver or relay job of a few deliveries (a steady trickle of events,
scenario (b) of the bench) then spent as much of the worker's time starting jobs (17 % of its samples) as
sending webhooks. Here one script does the same checks and sets the same key for every job a poll can
take, atomically (Redis runs a script alone), and returns the ones this worker started; running them is
arq's own ``run_job``, unchanged.
"""

from __future__ import annotations

from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

__all__ = ["QueueWorker"]

# KEYS: the queue; ARGV: now (ms), the in-progress TTL (ms), how many to start at most, the in-progress key
# prefix, then the job ids read from the queue head, in order. A job is started where arq would start it: not
# in progress, still queued, due (score <= now). The ids are scanned in Redis up to the limit: jobs in progress
# stay at the queue head until they end, and arq's loop paid three round trips to skip each of them.
_START_JOBS = """
local now, limit, prefix = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4]
local started = {}
for i = 5, #ARGV do
  if #started >= 2 * limit then break end
  local id = ARGV[i]
  local key = prefix .. id
  if redis.call('EXISTS', key) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score and tonumber(score) <= now then
      redis.call('PSETEX', key, ARGV[2], '1')
      started[#started + 1] = id
      started[#started + 1] = score
    end
  end
end
return started
"""


class QueueWorker(Worker):
    """arq's ``Worker`` with a ``start_jobs`` of one Redis call per poll (see the module's doc)."""

    _start_script: Any = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        free = self.max_jobs - self.job_counter
        if free <= 0 or not job_ids:
            return
        for job_id, score in await self._start(job_ids, free):
            # A slot is free (counted above): this never waits, as in arq's own loop.
            await self.sem.acquire()
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _start(self, job_ids: list[bytes], limit: int) -> list[tuple[str, int]]:
        """Mark up to ``limit`` of these jobs in progress, where arq would; the ones marked, with their scores."""
        if self._start_script is None:
            self._start_script = self.pool.register_script(_START_JOBS)
        reply = await self._start_script(
            keys=[self.queue_name],
            args=[timestamp_ms(), int(self.in_progress_timeout_s * 1000), limit, in_progress_key_prefix, *job_ids],
        )
        return [(reply[i].decode(), int(float(reply[i + 1]))) for i in range(0, len(reply), 2)]
